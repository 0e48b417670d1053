"""Two-party (client and model owner) secret-sharing engine core of the mpc+he mode: additive
2-out-of-2 shares in Z_2^64, base OT over X25519, IKNP OT extension, the OT-based non-linear
toolkit, linear backends (`linear`), the `MpcHeOps` engine, the session and the processes
(semi-honest, no third party, no dealer)."""
