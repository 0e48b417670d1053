"""The `privinfer` command line: the entry point is `privinfer.cli.main.main`; one module per
command group (generate, models, bench, security, tee, mpc, he)."""
