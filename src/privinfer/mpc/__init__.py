"""The MPC engine: three-party replicated secret sharing over Z_2^64 with fixed point; private
against any single semi-honest party (honest majority), no trusted dealer.

Modules: `ring` (encoding, wrapping ops), `prf` (pairwise AES-CTR randomness), `shares` (share
types, sharing, reveal), `runtime` (the `Party` context and cost meter), `protocols/` (arith,
trunc, boolean, compare, poly, nonlinear, activations, softmax, norms, and gumbel: the parties'
own sampling noise), `client` (the client's side of sharing and reconstruction), `ops`
(`MpcOps`, the model-facing `Ops`). The fixed-point error and cost report, the check, the
benchmarks and the fidelity run live in `privinfer.bench`
(`mpc_dryrun`, `mpc_check`, `mpc_bench`, `mpc_fidelity`).
"""
