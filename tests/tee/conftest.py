"""The TEE server shared by the gateway, end-to-end and limits tests here and by the proxy's tee
tests (tests/serve) is `shared_tee_server` in tests/conftest.py: one enclave per test session.

The fault tests (they kill the enclave) and the session tests (debug enclave, 1 s TTL) keep
servers of their own."""
