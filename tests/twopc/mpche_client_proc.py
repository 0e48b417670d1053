"""A client process for the mpc+he fault tests: `python mpche_client_proc.py CLUSTER MODEL`
connects as party 1, prints "up" and generates many tokens (the test kills it mid-session)."""

from __future__ import annotations

import sys

import privinfer
from privinfer.twopc.service import CLIENT, connect
from privinfer.twopc.session import client_generate


def main() -> None:
    cluster, model_path = sys.argv[1], sys.argv[2]
    model = privinfer.load(model_path)
    party = connect(cluster, CLIENT, timeout_s=30.0)
    print("up", flush=True)
    for _ in client_generate(party, model, [256, 87, 104], 200, (), {}):
        pass


if __name__ == "__main__":
    main()
