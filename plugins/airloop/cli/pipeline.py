"""`airloop` subcommands for running pipelines.

airloop run NAME [--batch DATE ...]   ingest → validate → train → evaluate → promote, via Airflow
airloop status [--json]               champion, last DAG runs and drift verdict per pipeline
airloop check                         validate every pipeline YAML
airloop ui [--port P]                 Airflow's scheduler, dag-processor, triggerer and api-server on this state

Each module adds its subcommands to the shared parser with :func:`register`; see airloop.cli.
"""

from __future__ import annotations

import argparse
import json
import sys

from airloop.config import get_pipeline, load_pipelines


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
    from airloop.monitoring import status, status_text
    from airloop.orchestration.runner import prepare_environment

    prepare_environment()
    doc = status.collect(load_pipelines())
    print(json.dumps(doc, indent=2, default=str) if args.json else status_text.render(doc))
    return 0


def cmd_ui(args) -> int:
    from airloop.orchestration import stack

    print("Starting Airflow (scheduler, dag-processor, triggerer, api-server) ...", flush=True)
    running = stack.start(port=args.port, parallelism=args.parallelism)
    cores = running.env["AIRFLOW__CORE__PARALLELISM"]
    print(
        f"Airflow UI: {running.url}  (login: {stack.ADMIN_USER} / {stack.admin_password()})\n"
        f"LocalExecutor with {cores} worker(s); component logs in {running.log_dir}. Ctrl-C stops everything.",
        flush=True,
    )
    return stack.serve_until_stopped(running, say=lambda text: print(text, flush=True))


def cmd_check(args) -> int:
    pipelines = load_pipelines()
    for name, cfg in pipelines.items():
        print(f"{name}: ok ({cfg.source_file})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands (each sets `func`, called with the parsed args, returning an exit code)."""
    p = sub.add_parser("run", help="run a pipeline from ingest to promote through Airflow")
    p.add_argument("name")
    p.add_argument("--batch", action="append", help="batch date(s) to ingest (default: the pending ones)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("status", help="champion, last DAG runs and drift per pipeline")
    p.add_argument("--json", action="store_true", help="stable JSON (docs/status.md)")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("ui", help="Airflow's own components on this state (the UI, the scheduler, ...)")
    p.add_argument("--port", type=int, default=8080, help="api-server port on 127.0.0.1 (default 8080)")
    p.add_argument("--parallelism", type=int, default=None, help="LocalExecutor workers (default: the cores)")
    p.set_defaults(func=cmd_ui)
    p = sub.add_parser("check", help="validate every pipeline YAML")
    p.set_defaults(func=cmd_check)
