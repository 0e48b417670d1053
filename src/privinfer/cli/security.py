"""`privinfer security --mode M`: the report of a mode's configuration, then its threat matrix."""

from __future__ import annotations

import argparse
import json
from typing import Any

from privinfer.cli import options
from privinfer.cli.main import EXIT_USAGE, add_common, error
from privinfer.tee.isolation import PLATFORMS


def _print_value(key: str, value: Any, indent: int = 0) -> None:
    pad = "  " * indent
    if isinstance(value, dict):
        print(f"{pad}{key}:")
        for k, v in value.items():
            _print_value(k, v, indent + 1)
    elif isinstance(value, list):
        print(f"{pad}{key}:")
        for v in value:
            print(f"{pad}  - {v}")
    else:
        print(f"{pad}{key}: {value}")


def cmd_security(args: argparse.Namespace) -> int:
    from privinfer import modes
    from privinfer.security.matrix import render_markdown
    from privinfer.security.report import build_report, threat_rows

    options.check_threads(args)
    if args.frac_bits is not None:
        options.check_positive("--frac-bits", args.frac_bits)
    options.check_text(args.prompt, "--prompt")
    if options.security_needs_model(args.mode):
        options.check_model(args.model)
    tee_only = args.platform != "software" or args.insecure_same_user
    if tee_only and args.mode != "tee":
        error("--platform and --insecure-same-user describe the tee mode only")
        return EXIT_USAGE
    mode = modes.get(args.mode)
    model = None
    if mode.security_needs_model:
        import privinfer

        model = privinfer.load(args.model, threads=args.threads)
    params: dict[str, Any] = {"model_name": args.model, "prompt": args.prompt}
    params["frac_bits"] = args.frac_bits
    if args.mode == "tee":
        params.update(platform=args.platform, insecure_same_user=args.insecure_same_user)
    report = build_report(mode, model, **params)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(f"privinfer security report: mode {args.mode}\n")
    for k, v in report["parameters"].items():
        _print_value(k, v)
    print("\nleaks by design:")
    for item in report["leakage"]:
        print(f"  - {item}")
    print("\nthreat matrix:\n")
    print(render_markdown(threat_rows(mode, **params)))
    return 0


def register(sub: Any) -> None:
    """Add `security`."""
    p = sub.add_parser("security", help="threat model and security report for a mode's parameters")
    p.add_argument("--mode", required=True, choices=options.mode_names(), help="the mode to report")
    p.add_argument("--model", default="smollm2-135m", help="mpc: model whose op counts are used")
    p.add_argument(
        "--prompt", default="What is the capital of France?", help="mpc: prompt for the op counts"
    )
    p.add_argument(
        "--frac-bits",
        type=int,
        default=None,
        metavar="F",
        help="mpc: fixed-point fraction bits (default: the runtime's, 16)",
    )
    p.add_argument(
        "--platform",
        default="software",
        choices=sorted(PLATFORMS),
        help="tee: the TEE platform whose isolation the host rows describe (default: software)",
    )
    p.add_argument(
        "--insecure-same-user",
        action="store_true",
        help="tee, software platform: host and enclave run as one OS user (host not protected)",
    )
    add_common(p)
    p.set_defaults(func=cmd_security)
