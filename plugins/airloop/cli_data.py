"""`airloop` subcommands for ingest, validation and data commands (suggest-suite, replay, profile).

Each module adds its subcommands to the shared parser with :func:`register`; see airloop.cli.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands (each sets `func`, called with the parsed args, returning an exit code)."""
