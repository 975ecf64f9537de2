"""The ``airloop`` command: run a pipeline's lifecycle through Airflow, show status, run the demo.

airloop run NAME [--batch DATE ...]   ingest → validate → train → evaluate → promote, via Airflow
airloop status [--json]               champion, last DAG runs and drift verdict per pipeline
airloop demo                          the whole loop on simulated data (what `make demo` runs)
airloop simulate DIR                  write the demo data set only
airloop check                         validate every pipeline YAML
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from airloop.cli import data as cli_data
from airloop.cli import model as cli_model
from airloop.cli import ops as cli_ops
from airloop.config import PipelineConfigError, get_pipeline, load_pipelines
from airloop.demo.simulate import SimulationSpec


def _runner(args):
    from airloop.orchestration.runner import Runner

    runner = Runner(quiet=not args.verbose)
    runner.say(f"Airflow logs: {runner.log_path}")
    return runner


def cmd_run(args) -> int:
    from airloop.orchestration import lifecycle

    cfg = get_pipeline(args.name)
    runner = _runner(args)
    outcome = lifecycle.run_pipeline(runner, cfg, args.batch or None)
    verdict = outcome.verdict
    print(verdict.get("summary", ""))
    if outcome.promoted:
        print(f"{cfg.name}: v{outcome.promoted['version']} is champion.")
        return 0
    if outcome.awaiting_approval:
        print(f"{cfg.name}: v{outcome.awaiting_approval} is blessed and waits for approval; the champion is unchanged.")
        return 0
    print(f"{cfg.name}: the gate did not bless the new model; the champion is unchanged.", file=sys.stderr)
    return 3


def cmd_status(args) -> int:
    from airloop.monitoring import status
    from airloop.orchestration.runner import prepare_environment

    prepare_environment()
    doc = status.collect(load_pipelines())
    print(json.dumps(doc, indent=2, default=str) if args.json else status.render(doc))
    return 0


def cmd_demo(args) -> int:
    from airloop.demo.run import run as demo

    cfg = get_pipeline(args.name)
    spec = SimulationSpec(
        history_rows=args.history_rows, daily_rows=args.daily_rows, days=args.days, drift_day=args.drift_day
    )
    runner = _runner(args)
    facts = demo.run_demo(cfg, runner, spec)
    print(demo.summary(cfg, facts))
    return 0


def cmd_simulate(args) -> int:
    from airloop.demo.simulate import simulate

    print(json.dumps(simulate(Path(args.dir)), indent=2))
    return 0


def cmd_check(args) -> int:
    pipelines = load_pipelines()
    for name, cfg in pipelines.items():
        print(f"{name}: ok ({cfg.source_file})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airloop", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="show Airflow's own log on the console")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run a pipeline from ingest to promote through Airflow")
    p.add_argument("name")
    p.add_argument("--batch", action="append", help="batch date(s) to ingest (default: the pending ones)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("status", help="champion, last DAG runs and drift per pipeline")
    p.add_argument("--json", action="store_true", help="stable JSON (docs/status.md)")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("demo", help="the whole loop on simulated data")
    p.add_argument("--name", default="churn")
    defaults = SimulationSpec()
    p.add_argument("--days", type=int, default=defaults.days, help="daily batches after the history")
    p.add_argument("--drift-day", type=int, default=defaults.drift_day, help="first drifted day (1-based)")
    p.add_argument("--daily-rows", type=int, default=defaults.daily_rows)
    p.add_argument("--history-rows", type=int, default=defaults.history_rows)
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("simulate", help="write the demo data set")
    p.add_argument("dir")
    p.set_defaults(func=cmd_simulate)
    p = sub.add_parser("check", help="validate every pipeline YAML")
    p.set_defaults(func=cmd_check)
    for area in (cli_data, cli_model, cli_ops):
        area.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from airloop.orchestration.lifecycle import StageRefused

    try:
        return args.func(args)
    except (PipelineConfigError, StageRefused) as err:
        print(f"airloop: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
