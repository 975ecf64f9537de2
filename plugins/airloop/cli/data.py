"""`airloop` subcommands for ingest, validation and data commands (suggest-suite, replay, profile).

airloop suggest-suite NAME [--from FILE] [--output FILE] [--force]   bootstrap include/gx/NAME.json
airloop replay NAME BATCH [--reingest]                               revalidate a quarantined batch, via Airflow
airloop profile NAME [--from FILE]                                   EDA report (HTML), logged to MLflow

Each module adds its subcommands to the shared parser with :func:`register`; see airloop.cli.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from airloop.config import get_pipeline


def cmd_suggest_suite(args) -> int:
    from airloop.data.suggest import reference_frame, suggest_suite, write_suite

    cfg = get_pipeline(args.name)
    frame = reference_frame(cfg, args.source)
    suite = suggest_suite(cfg, frame, tolerance=args.tolerance, mostly=args.mostly)
    path = write_suite(cfg, suite, Path(args.output) if args.output else None, overwrite=args.force)
    counts: dict[str, int] = {}
    for exp in suite["expectations"]:
        counts[exp["meta"]["severity"]] = counts.get(exp["meta"]["severity"], 0) + 1
    print(
        f"Wrote {path}: {len(suite['expectations'])} expectations "
        f"({', '.join(f'{n} {k}' for k, n in sorted(counts.items()))}) from {len(frame)} reference rows. "
        "Review it (severity, ranges, domains) and commit it with the pipeline."
    )
    return 0


def cmd_replay(args) -> int:
    from airloop.orchestration import lifecycle
    from airloop.orchestration.runner import Runner

    cfg = get_pipeline(args.name)
    runner = Runner(quiet=not args.verbose)
    runner.say(f"Airflow logs: {runner.log_path}")
    if args.reingest:  # the data was fixed upstream: take it in again first (raw bytes of both kept)
        ingested = lifecycle.step(runner, cfg, "ingest", {"batch_id": args.batch}, args.batch)
        if not ingested.ok:
            raise lifecycle.StageRefused(f"ingest of batch {args.batch} refused: {ingested.reason()}")
    validated = lifecycle.step(runner, cfg, "validate", {"batch_id": args.batch, "replay": True}, "replay")
    if not validated.ok:
        raise lifecycle.StageRefused(f"replay of batch {args.batch} refused: {validated.reason()}")
    # In a scheduler the validated Asset event now triggers train (first model only) and score; here the
    # driver runs them in that order, as `airloop run` does.
    outcome = lifecycle.build_model(runner, cfg, "train", args.batch)
    if outcome.promoted:
        runner.say(f"{cfg.name}: v{outcome.promoted['version']} is champion.")
    scored = lifecycle.step(runner, cfg, "score", {"batch_id": args.batch}, args.batch)
    if not scored.ok:
        raise lifecycle.StageRefused(f"score of {args.batch} failed: {scored.reason()}")
    print(
        f"{cfg.name}: batch {args.batch} passed on replay and flowed on (train: "
        f"{outcome.skipped or 'trained'}; score: {'skipped' if scored.skips else 'scored'})."
    )
    return 0


def cmd_profile(args) -> int:
    from airloop.data.profile import profile_pipeline
    from airloop.data.suggest import reference_frame

    cfg = get_pipeline(args.name)
    frame = reference_frame(cfg, args.source)
    result = profile_pipeline(cfg, frame, source=f"Data: {args.source or 'validated batches in the lake'}.")
    print(result["summary"])
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands (each sets `func`, called with the parsed args, returning an exit code)."""
    p = sub.add_parser("suggest-suite", help="bootstrap the GX expectation suite from reference data")
    p.add_argument("name")
    p.add_argument("--from", dest="source", help="reference file (default: the validated batches in the lake)")
    p.add_argument("--output", help="where to write (default: include/gx/NAME.json)")
    p.add_argument("--force", action="store_true", help="replace an existing suite")
    p.add_argument("--tolerance", type=float, default=0.1, help="widen numeric ranges by this share of the spread")
    p.add_argument("--mostly", type=float, default=0.99, help="share of rows that must pass before quarantine")
    p.set_defaults(func=cmd_suggest_suite)
    p = sub.add_parser("replay", help="revalidate a quarantined batch with the current suite, via Airflow")
    p.add_argument("name")
    p.add_argument("batch")
    p.add_argument("--reingest", action="store_true", help="ingest the batch from the source again first")
    p.set_defaults(func=cmd_replay)
    p = sub.add_parser("profile", help="EDA report (HTML) of the pipeline's data, logged to MLflow")
    p.add_argument("name")
    p.add_argument("--from", dest="source", help="data file (default: the validated batches in the lake)")
    p.set_defaults(func=cmd_profile)
