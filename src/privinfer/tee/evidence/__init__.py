"""Evidence verifiers (software platform, SGX DCAP, TDX, SEV-SNP, NVIDIA SPDM) behind one pipeline."""
