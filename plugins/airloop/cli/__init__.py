"""The ``airloop`` command. One module per command group, each adding its subcommands with ``register``:

- :mod:`airloop.cli.pipeline`: run, status, check
- :mod:`airloop.cli.demo`: demo, simulate
- :mod:`airloop.cli.data`: suggest-suite, replay, profile
- :mod:`airloop.cli.model`: rollback, promotions
- :mod:`airloop.cli.ops`: serve, trace, review, shadow-report
- :mod:`airloop.cli.feasibility`: feasibility

:func:`main` turns Airloop's own errors (a bad YAML, bad input, nothing to do, a refused stage) into one line on
stderr and exit code 2, once for every command.
"""

from __future__ import annotations

import argparse
import sys

from airloop.cli import data, demo, feasibility, model, ops, pipeline
from airloop.errors import AirloopError

GROUPS = (pipeline, demo, data, model, ops, feasibility)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airloop", description="The closed machine-learning loop on Apache Airflow and MLflow."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show Airflow's own log on the console")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AirloopError as err:
        print(f"airloop {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (airloop demo); what was started has been stopped
        print(f"airloop {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
