"""`airloop` subcommands for model commands (rollback, promotion log).

airloop rollback NAME [--to VERSION] --reason TEXT   restore an earlier champion, reason recorded
airloop promotions NAME [--json]                     the promotion log: what, when, why, by whom

Each module adds its subcommands to the shared parser with :func:`register`; see airloop.cli.
"""

from __future__ import annotations

import argparse
import getpass
import json


def _actor() -> str:
    try:
        return f"{getpass.getuser()} (airloop rollback)"
    except (KeyError, OSError):  # no user name in a bare container
        return "airloop rollback"


def cmd_rollback(args) -> int:
    """Restore the previous champion (or ``--to``) directly in the registry, with the same lock and record as
    the rollback DAG: in an incident this must not wait for a scheduler."""
    from airloop.config import get_pipeline
    from airloop.store import promotions

    cfg = get_pipeline(args.name)
    record = promotions.rollback(cfg, args.to, reason=args.reason, actor=_actor())
    print(
        f"{cfg.name}: v{record['version']} is champion again (was v{record['previous']}); "
        f"reason recorded: {record['reason']!r}; log: {record['log_uri']}"
    )
    return 0


def cmd_promotions(args) -> int:
    from airloop.config import get_pipeline
    from airloop.store import promotions

    records = promotions.promotion_log(get_pipeline(args.name))
    if args.json:
        print(json.dumps(records, indent=2, default=str))
        return 0
    for r in records:
        approval = f", approved by {r['approval'].get('approved_by')}" if r.get("approval") else ""
        print(
            f"{r['at']}  {r['event']:9} v{r['version']} (previous v{r['previous'] or '-'}) by {r['actor']}"
            + ("" if r.get("status", "completed") == "completed" else f" [{r['status']}]")
            + f"{approval}: {r['reason']}"
        )
    if not records:
        print("no promotions recorded yet")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands (each sets `func`, called with the parsed args, returning an exit code)."""
    p = sub.add_parser("rollback", help="restore an earlier champion (default: the previous one)")
    p.add_argument("name", help="pipeline name")
    p.add_argument("--to", help="version to restore (default: the previous champion in the promotion log)")
    p.add_argument("--reason", required=True, help="why; recorded with the rollback")
    p.set_defaults(func=cmd_rollback)
    p = sub.add_parser("promotions", help="the promotion log of a pipeline's model")
    p.add_argument("name", help="pipeline name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_promotions)
