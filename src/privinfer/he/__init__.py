"""CKKS engine: adapter (ckks), packing, linear algebra, polynomials, refresh, HeOps, HE mode.

Security assumption: semi-honest server with plaintext weights and client-held secret key;
see each module's docstring and docs/he.md (`ckks` is the only module that imports tenseal).
Server: ops (+ norms, decoder, nonlinear, ranges), server, transport. Client: session, client.
"""
