"""CKKS engine: adapter (ckks), packing, linear algebra, polynomials, refresh, tensors, HeOps.

Security assumption: semi-honest server with plaintext weights and client-held secret key;
see each module's docstring (`ckks` is the only module that imports tenseal).
"""
