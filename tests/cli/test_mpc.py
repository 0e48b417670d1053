"""`privinfer mpc` keeps copies of a few engine constants (so its help needs no torch): they
must match the engine's, and `mpc party` must take exactly the flags of party_main."""

from __future__ import annotations

import argparse

from privinfer.cli import mpc as cli_mpc


def test_copied_constants_match_the_engine() -> None:
    from privinfer.mpc.ring import DEFAULT_FRAC_BITS
    from privinfer.mpc.runtime import N_PARTIES
    from privinfer.net.cluster import DEFAULT_HOSTS

    assert cli_mpc.N_PARTIES == N_PARTIES
    assert cli_mpc.DEFAULT_FRAC_BITS == DEFAULT_FRAC_BITS
    assert list(cli_mpc.DEFAULT_HOSTS) == list(DEFAULT_HOSTS)


def test_party_flags_match_party_main() -> None:
    from privinfer.mpc.party_main import add_party_args

    ours, theirs = argparse.ArgumentParser(), argparse.ArgumentParser()
    cli_mpc.add_party_arguments(ours)
    add_party_args(theirs)

    def table(p: argparse.ArgumentParser) -> dict[str, tuple]:
        return {a.dest: (a.option_strings, a.default, a.type, a.required) for a in p._actions}

    assert table(ours) == table(theirs)
