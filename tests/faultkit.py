"""Helpers of the fault matrix (tests/reliability): small configs, the champion, child processes to kill."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from airloop.config import parse_pipeline

REPO = Path(__file__).resolve().parents[1]


def make_cfg(name: str, **overrides):
    doc = {"name": name, "source": {"uri": "file:///nowhere/*.csv"}, "target": "y", "task": "classification"}
    doc.update(overrides)
    return parse_pipeline(doc, f"{name}.yaml")


def champion(cfg) -> str | None:
    from airloop.store import registry

    mv = registry.get_version(cfg, registry.CHAMPION)
    return str(mv.version) if mv is not None else None


def run_child(code: str, timeout_s: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python with plugins/ and tests/ importable and the current environment (plus
    ``env``); a child that kills itself with SIGKILL returns -9."""
    full = {**os.environ, **(env or {})}
    full["PYTHONPATH"] = os.pathsep.join([str(REPO / "plugins"), str(REPO / "tests"), full.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=full, capture_output=True, text=True, timeout=timeout_s
    )
