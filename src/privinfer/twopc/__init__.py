"""Two-party (client and model owner) secret-sharing engine core: additive 2-out-of-2 shares in
Z_2^64, base OT over X25519, IKNP OT extension and the OT-based non-linear toolkit (semi-honest,
no third party, no dealer). The HE linear layers and the mode plug-in are not built yet."""
