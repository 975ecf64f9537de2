"""`airloop` subcommands for serving and operations: serve, trace, review, shadow-report.

airloop serve NAME [--port P] [--workers N]      the champion over HTTP (MLflow-compatible /invocations)
airloop trace PREDICTION_ID [--json] [--top N] [--no-explain]   the chain behind one prediction (model, run,
                                                 data, code, DAG runs) and its top SHAP contributions
airloop review NAME [--export CSV | --labels CSV --reviewer WHO]   the low-confidence review queue
airloop shadow-report NAME                        the shadow challenger compared with the champion

Each module adds its subcommands to the shared parser with :func:`register`; see airloop.cli.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def cmd_serve(args) -> int:
    from airloop.config import get_pipeline
    from airloop.orchestration.runner import prepare_environment
    from airloop.serving import app

    prepare_environment()
    cfg = get_pipeline(args.name)
    from_connection = None
    if cfg.serving.auth_connection and not os.environ.get(app.TOKEN_ENV):
        from airloop.orchestration.secrets import connection_password

        from_connection = connection_password(
            cfg.serving.auth_connection, f"pipeline {cfg.name!r}: serving.auth_connection"
        )
    token = app.serve_token(cfg, from_connection)
    auth = "bearer token required" if token else f"NO authentication (set {app.TOKEN_ENV} or serving.auth_connection)"
    print(
        f"Serving {cfg.registered_model_name}@champion on http://{args.host}:{args.port} "
        f"({args.workers} worker(s), {auth}); POST /invocations, GET /health, GET /metrics",
        file=sys.stderr,
    )
    app.run(cfg, host=args.host, port=args.port, workers=args.workers, log_level=args.log_level, token=token)
    return 0


def cmd_trace(args) -> int:
    from airloop.monitoring import trace
    from airloop.orchestration.runner import prepare_environment

    prepare_environment()
    chain = trace.trace(args.prediction_id, explain=not args.no_explain, top=args.top)
    print(json.dumps(chain, indent=2, default=str) if args.json else trace.render(chain))
    return 0


def cmd_review(args) -> int:
    import pandas as pd

    from airloop.config import get_pipeline
    from airloop.orchestration.runner import prepare_environment
    from airloop.serving import review
    from airloop.store.lake import Lake

    prepare_environment()
    cfg = get_pipeline(args.name)
    lake = Lake(cfg.name)
    if args.labels:
        if not args.reviewer:
            print("airloop review: --labels needs --reviewer (who labeled them)", file=sys.stderr)
            return 2
        done = review.submit_labels(cfg, lake, pd.read_csv(args.labels), args.reviewer)
        print(f"{cfg.name}: {done['rows']} reviewed label(s) recorded in {done['uri']}")
        return 0
    items = review.pending(cfg, lake)
    if args.export:
        items.to_csv(args.export, index=False)
        print(f"{cfg.name}: {len(items)} pending item(s) written to {args.export}; fill in {cfg.target!r}")
    else:
        print(f"{cfg.name}: {len(items)} pending item(s) in the review queue")
        if not items.empty:
            print(items.head(20).to_string(index=False))
    return 0


def cmd_shadow_report(args) -> int:
    from airloop.config import get_pipeline
    from airloop.monitoring import shadow
    from airloop.orchestration.runner import prepare_environment

    prepare_environment()
    doc = shadow.shadow_report(get_pipeline(args.name))
    print(json.dumps(doc, indent=2, default=str) if args.json else doc["summary"])
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands (each sets `func`, called with the parsed args, returning an exit code)."""
    p = sub.add_parser("serve", help="serve the champion over HTTP (MLflow-compatible /invocations)")
    p.add_argument("name")
    p.add_argument("--port", type=int, default=5001)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--log-level", default="warning")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("trace", help="the chain behind one prediction (model, run, data, code, DAG runs)")
    p.add_argument("prediction_id")
    p.add_argument("--json", action="store_true", help="the same chain as JSON")
    p.add_argument("--top", type=int, default=5, help="SHAP contributions to show (default 5)")
    p.add_argument("--no-explain", action="store_true", help="skip the SHAP explanation (no model load)")
    p.set_defaults(func=cmd_trace)
    p = sub.add_parser("review", help="the review queue of low-confidence predictions")
    p.add_argument("name")
    p.add_argument("--export", help="write the pending items to this CSV, to be labeled")
    p.add_argument("--labels", help="a CSV with prediction_id and the target column, labeled by a reviewer")
    p.add_argument("--reviewer", help="who labeled them (recorded with each label)")
    p.set_defaults(func=cmd_review)
    p = sub.add_parser("shadow-report", help="compare the shadow challenger with the champion")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_shadow_report)
