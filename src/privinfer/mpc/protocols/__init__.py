"""MPC protocols over replicated shares (three parties, semi-honest, honest majority)."""
