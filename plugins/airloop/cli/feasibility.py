"""`airloop feasibility`: is there something honest to learn before the first model?

airloop feasibility NAME [--json]                  write and print the feasibility report (go / no-go)
airloop feasibility NAME --force --reason TEXT     override a no-go, so the first promotion may go ahead

Each module adds its subcommands to the shared parser with :func:`register`; see airloop.cli.
"""

from __future__ import annotations

import argparse
import getpass
import json


def cmd_feasibility(args) -> int:
    from airloop.config import get_pipeline
    from airloop.errors import BadInput
    from airloop.model import feasibility

    cfg = get_pipeline(args.name)
    if args.force:
        if not (args.reason or "").strip():
            raise BadInput("airloop feasibility --force: expected --reason TEXT (why the no-go is overridden)")
        try:
            who = getpass.getuser()
        except (KeyError, OSError):
            who = "unknown user"
        report = feasibility.force(cfg, args.reason, f"{who} (airloop feasibility --force)")
        print(f"{cfg.name}: no-go overridden by {report['override']['by']}; report: {report['html_uri']}")
        return 0
    report = feasibility.run_feasibility(cfg)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(report["sentence"])
    for w in report["warnings"]:
        print(f"  warning: {w}")
    print(f"  report: {report['html_uri']}" + (f" (MLflow run {report['run_id']})" if report.get("run_id") else ""))
    return 0 if report["decision"] == "go" else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("feasibility", help="go / no-go report before the first model (signal, leakage, balance)")
    p.add_argument("name", help="pipeline name")
    p.add_argument("--json", action="store_true")
    p.add_argument("--force", action="store_true", help="override a no-go so the first promotion may go ahead")
    p.add_argument("--reason", help="why the no-go is overridden (with --force)")
    p.set_defaults(func=cmd_feasibility)
