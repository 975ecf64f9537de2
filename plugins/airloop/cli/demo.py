"""`airloop` subcommands for the demo.

airloop demo                          the whole loop on simulated data through Airflow's scheduler (`make demo`)
airloop demo --in-process             the same loop driven in one process (dag.test), for a quick look
airloop simulate DIR                  write the demo data set only

Each module adds its subcommands to the shared parser with :func:`register`; see airloop.cli.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from airloop.cli.pipeline import _runner
from airloop.config import get_pipeline
from airloop.demo.spec import SimulationSpec


def cmd_demo(args) -> int:
    from airloop.demo import run as demo

    cfg = get_pipeline(args.name)
    spec = SimulationSpec(
        history_rows=args.history_rows, daily_rows=args.daily_rows, days=args.days, drift_day=args.drift_day
    )
    if args.in_process:
        runner = _runner(args)
        runner.command = "demo"
        facts = demo.run_demo(cfg, runner, spec)
    else:
        from airloop.demo.scheduled import run_demo_scheduled

        facts = run_demo_scheduled(cfg, spec, say=lambda text: print(text, flush=True))
    print(demo.summary(cfg, facts))
    return 0


def cmd_simulate(args) -> int:
    from airloop.demo.simulate import simulate

    print(json.dumps(simulate(Path(args.dir)), indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands (each sets `func`, called with the parsed args, returning an exit code)."""
    p = sub.add_parser("demo", help="the whole loop on simulated data")
    p.add_argument("--name", default="churn")
    defaults = SimulationSpec()
    p.add_argument("--days", type=int, default=defaults.days, help="daily batches after the history")
    p.add_argument("--drift-day", type=int, default=defaults.drift_day, help="first drifted day (1-based)")
    p.add_argument("--daily-rows", type=int, default=defaults.daily_rows)
    p.add_argument("--history-rows", type=int, default=defaults.history_rows)
    p.add_argument(
        "--in-process",
        action="store_true",
        help="drive the DAGs in this process with dag.test instead of Airflow's own scheduler, backfills and "
        "Asset events (the default)",
    )
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("simulate", help="write the demo data set")
    p.add_argument("dir")
    p.set_defaults(func=cmd_simulate)
