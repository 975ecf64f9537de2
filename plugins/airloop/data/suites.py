"""Expectation suites (GX Core 1.x JSON): where a pipeline's suite lives, the default one, and checking one.

A pipeline's suite is the reviewed JSON ``<suites_dir>/<pipeline>.json`` when it exists, else a default built
from the config. Each expectation's ``meta.severity`` is ``"critical"`` (the default) or ``"warning"``: a
critical failure quarantines the batch, a warning is recorded and the batch passes. Columns whose names start
with ``_`` are Airloop's bookkeeping; suites never check them. :mod:`airloop.data.validate` runs a suite.

GX is imported inside the functions: importing it takes seconds, and ``import airloop.data.suites`` should not.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from airloop.config import PipelineConfig
from airloop.errors import BadInput

CRITICAL = "critical"
WARNING = "warning"
SEVERITIES = (CRITICAL, WARNING)


class SuiteError(BadInput):
    """An expectation suite that cannot be used; the message names the file and the expectation."""


def suite_path(cfg: PipelineConfig) -> Path:
    """Where the reviewed suite of a pipeline lives: ``<suites_dir>/<name>.json``."""
    from airloop.settings import suites_dir

    return suites_dir() / f"{cfg.name}.json"


@contextlib.contextmanager
def quiet_gx() -> Iterator[None]:
    """GX logs at INFO on import (hundreds of lines) and at every step; keep only its warnings, for one call."""
    logger = logging.getLogger("great_expectations")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _expectation(type_: str, severity: str = CRITICAL, **kwargs: Any) -> dict:
    return {"type": type_, "kwargs": kwargs, "meta": {"severity": severity}}


def default_suite(cfg: PipelineConfig, columns: list[str]) -> dict:
    """A suite built from the config: schema checks on target, id, event time and features, and rows >= 1."""
    exps = []
    if cfg.labels is None:
        # The target is expected inline, but a batch may still arrive before its labels: warn, do not block.
        exps.append(_expectation("expect_column_to_exist", WARNING, column=cfg.target))
    if cfg.id_column:
        exps.append(_expectation("expect_column_to_exist", column=cfg.id_column))
        exps.append(_expectation("expect_column_values_to_not_be_null", column=cfg.id_column))
    if cfg.event_time_column:
        exps.append(_expectation("expect_column_to_exist", column=cfg.event_time_column))
    # Same rule as airloop.data.datasets.feature_columns: declared features, else every non-reserved column.
    reserved = {cfg.target, cfg.id_column, cfg.event_time_column}
    features = cfg.features or [c for c in columns if c not in reserved and not str(c).startswith("_")]
    exps += [_expectation("expect_column_to_exist", column=c) for c in features]
    exps.append(_expectation("expect_table_row_count_to_be_between", min_value=1))
    return {
        "name": cfg.name,
        "expectations": exps,
        "meta": {"airloop": "default suite built from the pipeline config (no reviewed JSON suite)"},
    }


def columns_of(exp: dict) -> list[str]:
    kwargs = exp.get("kwargs") or {}
    cols = [kwargs[k] for k in ("column", "column_A", "column_B") if isinstance(kwargs.get(k), str)]
    for key in ("column_list", "column_set"):
        if isinstance(kwargs.get(key), list | tuple | set):
            cols += [c for c in kwargs[key] if isinstance(c, str)]
    return cols


def severity_of(exp: dict) -> str:
    """``meta.severity``, else GX's own ``severity`` field (``info`` counts as a warning), else critical."""
    value = (exp.get("meta") or {}).get("severity") or exp.get("severity") or CRITICAL
    return WARNING if value == "info" else value


def check_suite(suite: Any, source: str) -> dict:
    """Check a suite dict in GX 1.x's JSON format; ``source`` names it in errors. Returns the suite."""
    with quiet_gx():
        import great_expectations as gx
        from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    if not isinstance(suite, dict) or not isinstance(suite.get("expectations"), list):
        raise SuiteError(f"{source}: expected a JSON object with an 'expectations' list, found {type(suite).__name__}")
    for i, exp in enumerate(suite["expectations"]):
        where = f"{source}: expectation #{i} ({exp.get('type', '?') if isinstance(exp, dict) else exp!r})"
        if not isinstance(exp, dict):
            raise SuiteError(f"{where}: expected an object with 'type' and 'kwargs'")
        if "expectation_type" in exp:
            raise SuiteError(f"{where}: key 'expectation_type' is GX 0.x format; GX 1.x calls it 'type'")
        if severity_of(exp) not in SEVERITIES:
            raise SuiteError(f"{where}: meta.severity: expected one of {SEVERITIES}, found {severity_of(exp)!r}")
        bookkeeping = [c for c in columns_of(exp) if c.startswith("_")]
        if bookkeeping:
            raise SuiteError(f"{where}: columns {bookkeeping} are Airloop bookkeeping ('_' prefix), never checked")
        try:
            ExpectationConfiguration(**exp).to_domain_obj()
        except Exception as err:  # GX raises several types here (pydantic, TypeError, its own)
            first = str(err).strip().splitlines()
            raise SuiteError(f"{where}: not a valid expectation: {' '.join(first[:3])}") from None
    try:
        gx.ExpectationSuite(**suite)
    except Exception as err:
        raise SuiteError(f"{source}: not a valid GX 1.x expectation suite: {err}") from None
    return suite


def load_suite(cfg: PipelineConfig, columns: list[str]) -> dict:
    """The pipeline's suite as a JSON-able dict: the reviewed JSON file if it exists, else the default suite.

    Raises :class:`SuiteError` naming the file when it is not valid JSON or not a valid GX 1.x suite.
    """
    path = suite_path(cfg)
    if not path.exists():
        return default_suite(cfg, columns)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SuiteError(f"{path}: not valid JSON: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SuiteError(f"{path}: cannot be read: {err}") from None
    if isinstance(data, dict):
        data.setdefault("name", cfg.name)
    return check_suite(data, str(path))


# --- what the default suite refuses beyond its expectations -------------------------------------------------

SENTINEL_MIN_NUMERIC_SHARE = 0.5  # a text column this share of whose values are numbers is "numbers + sentinels"


def _top(values: Any, n: int = 3) -> str:
    counts = values.value_counts().head(n)
    return ", ".join(f"{v!r} x{c}" for v, c in counts.items())


def default_suite_refusals(cfg: PipelineConfig, frame: Any, first_batch: bool) -> list[dict]:
    """Critical failures (validate's failure dicts) for data the default suite would otherwise let through,
    each naming the column, the share, the top offending values and how to declare the intent:

    - a text column that is mostly numbers with a few text sentinels ("unknown", "?"): it would train as a
      categorical (declare the sentinels as missing with ``source.options.na_values``, or the column as a
      category with ``categorical_features``);
    - on the first batch, a target with a single value: no model can learn from it.

    Only used with no reviewed suite file; a reviewed suite states the intent itself.
    """
    import pandas as pd

    failures = []
    declared = set(cfg.categorical_features or [])
    skip = declared | {c for c in (cfg.id_column, cfg.event_time_column) if c}
    for column in frame.columns:
        name = str(column)
        series = frame[column]
        if name.startswith("_") or name in skip or not (series.dtype == object or pd.api.types.is_string_dtype(series)):
            continue
        present = series.dropna()
        if present.empty:
            continue
        numeric = pd.to_numeric(present, errors="coerce")
        share = float(numeric.notna().mean())
        if SENTINEL_MIN_NUMERIC_SHARE <= share < 1:
            text = present[numeric.isna()].astype(str)
            sentinels = sorted(text.unique().tolist(), key=lambda v: -int((text == v).sum()))[:5]
            failures.append(
                {
                    "expectation": "airloop_numbers_with_text_sentinels",
                    "column": name,
                    "unexpected_percent": round(100 * (1 - share), 3),
                    "details": (
                        f"{share:.1%} of its values are numbers, {1 - share:.1%} text (top: {_top(text)}); it "
                        f"would train as a category. Declare the text as missing with source.options.na_values: "
                        f"{sentinels}, or list {name!r} in categorical_features if it is a category"
                    ),
                }
            )
    if first_batch and cfg.target in frame.columns:
        target = frame[cfg.target].dropna()
        if len(target) and target.nunique() == 1:
            failures.append(
                {
                    "expectation": "airloop_constant_target",
                    "column": cfg.target,
                    "unexpected_percent": 100.0,
                    "details": (
                        f"the target has a single value in 100% of {len(target)} labelled rows (top: "
                        f"{_top(target.astype(str))}); no model can learn from it. Send a first batch with "
                        f"more than one {cfg.target!r} value, or review a suite (airloop suggest) if this is intended"
                    ),
                }
            )
    return failures
