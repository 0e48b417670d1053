"""tee+he hybrid engine: an attested refresh enclave takes the client's place in CKKS inference.

Security assumption: a semi-honest HE server (plaintext weights, public keys only) and a refresh
enclave (the client's secret key, released only over a channel whose attestation passed the
client's policy) that do not collude; a server and enclave that collude learn everything. See
docs/tee-he.md. Enclave: `enclave` (the measured program), `session` (its per-session state);
server: `server`; client: `client`; shared: `protocol`; launching: `launch`.
"""
