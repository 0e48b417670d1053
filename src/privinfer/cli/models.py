"""`privinfer models`: the known models and where they were found (no model is loaded)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from privinfer.cli.main import add_common


def cmd_models(args: argparse.Namespace) -> int:
    from privinfer.models.registry import MODELS, locate

    rows = []
    for spec in MODELS.values():
        p = locate(spec)
        rows.append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "description": spec.description,
                "path": str(p) if p else None,
                "install": spec.install,
            }
        )
    if args.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        where = r["path"] or f"not installed ({r['install']})"
        print(f"{r['name']:<14} {r['kind']:<6} {r['description']}\n{'':<14} {where}")
    return 0


def register(sub: Any) -> None:
    """Add `models`."""
    m = sub.add_parser("models", help="list known models and where they were found")
    add_common(m, threads=False)
    m.set_defaults(func=cmd_models)
