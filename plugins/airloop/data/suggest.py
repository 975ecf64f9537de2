"""Bootstrap a pipeline's expectation suite from reference data (what TFX's SchemaGen does; GX 1.x does not).

``suggest_suite(cfg, frame)`` returns a GX 1.x suite dict a person then reviews and edits: the column set,
types, null fractions, numeric ranges (widened by a tolerance), categorical domains, row-count bounds and id
uniqueness. Each expectation carries ``meta.severity`` (see :mod:`airloop.data.suites`) and ``meta.notes`` saying
what it was derived from. Range and domain checks come in pairs: a *warning* on any value outside the reference,
and a *critical* check that quarantines when more than ``1 - mostly`` of the rows fall outside.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from airloop.config import PipelineConfig
from airloop.data.suites import CRITICAL, WARNING, check_suite, suite_path
from airloop.errors import BadInput
from airloop.store.lake import BATCH_COLUMN
from airloop.values import plain

NUMERIC_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
NUMERIC_TYPES += ["float16", "float32", "float64", "Int64", "Int32", "Float64", "Float32"]


class SuggestError(BadInput):
    """Reference data that cannot seed a suite; the message says what was expected."""


def _exp(type_: str, severity: str, notes: str, **kwargs: Any) -> dict:
    return {"type": type_, "kwargs": kwargs, "meta": {"severity": severity, "notes": notes}}


def _range(series: pd.Series, tolerance: float) -> tuple[float, float]:
    """The reference min/max widened by ``tolerance`` times the spread; non-negative data stays >= 0, and
    integer data gets integer bounds."""
    lo, hi = float(series.min()), float(series.max())
    pad = (hi - lo) * tolerance or abs(hi) * tolerance or 1.0
    new_lo, new_hi = lo - pad, hi + pad
    if lo >= 0:
        new_lo = max(0.0, new_lo)
    if pd.api.types.is_integer_dtype(series):
        new_lo, new_hi = math.floor(new_lo), math.ceil(new_hi)
    return round(new_lo, 6), round(new_hi, 6)


def _batch_sizes(frame: pd.DataFrame) -> list[int]:
    if BATCH_COLUMN in frame.columns and frame[BATCH_COLUMN].notna().any():
        return frame.groupby(BATCH_COLUMN).size().tolist()
    return [len(frame)]


def suggest_suite(
    cfg: PipelineConfig,
    frame: pd.DataFrame,
    *,
    tolerance: float = 0.1,
    null_tolerance: float = 0.05,
    mostly: float = 0.99,
    max_categories: int = 50,
    row_count_factor: float = 10.0,
) -> dict:
    """A GX 1.x suite dict for the pipeline, derived from a reference frame (e.g. its validated batches).

    ``tolerance`` widens numeric ranges by that share of the observed spread; ``null_tolerance`` is the extra
    share of nulls allowed over the reference; ``mostly`` the share of rows that must be in range / in the
    domain before a batch is quarantined; row counts may be ``row_count_factor`` times smaller or larger
    than the reference batches. Columns with more than ``max_categories`` distinct values are not treated
    as categorical.
    """
    columns = [c for c in map(str, frame.columns) if not c.startswith("_")]
    if frame.empty or not columns:
        raise SuggestError(f"pipeline {cfg.name!r}: reference data has no rows or no columns; expected a sample")
    data = frame[columns]
    exps: list[dict] = []
    if cfg.labels is None:
        exps.append(
            _exp(
                "expect_table_columns_to_match_set",
                CRITICAL,
                "the reference columns, no more and no fewer",
                column_set=columns,
                exact_match=True,
            )
        )
    else:  # the target may come inline or later from the labels feed: allow its absence, refuse extras
        n = len(columns)
        exps.append(
            _exp(
                "expect_table_column_count_to_be_between",
                CRITICAL,
                f"{n} reference columns; the target may be missing (labels feed)",
                min_value=n - 1 if cfg.target in columns else n,
                max_value=n,
            )
        )
    categorical = set(cfg.categorical_features or [])
    for col in columns:
        s = data[col]
        if col == cfg.target:
            exps.append(_exp("expect_column_to_exist", WARNING, "the target (may arrive later)", column=col))
            continue
        exps.append(_exp("expect_column_to_exist", CRITICAL, "present in the reference", column=col))
        null_frac = float(s.isna().mean())
        if col == cfg.id_column:
            exps.append(_exp("expect_column_values_to_not_be_null", CRITICAL, "the id", column=col))
            exps.append(_exp("expect_column_values_to_be_unique", CRITICAL, "the id is unique per batch", column=col))
            continue
        if null_frac < 1 - null_tolerance:
            allowed = round(max(0.0, 1 - null_frac - null_tolerance), 4)
            note = f"{null_frac:.1%} null in the reference, {null_tolerance:.0%} more allowed"
            kwargs = {"column": col} if allowed >= 1 else {"column": col, "mostly": allowed}
            exps.append(_exp("expect_column_values_to_not_be_null", CRITICAL, note, **kwargs))
        values = s.dropna()
        if col == cfg.event_time_column or pd.api.types.is_datetime64_any_dtype(s):
            continue
        is_numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        if is_numeric:
            exps.append(
                _exp(
                    "expect_column_values_to_be_in_type_list",
                    CRITICAL,
                    f"numeric ({s.dtype})",
                    column=col,
                    type_list=NUMERIC_TYPES,
                )
            )
        if is_numeric and col not in categorical and len(values):
            lo, hi = _range(values, tolerance)
            note = f"reference range [{plain(values.min())}, {plain(values.max())}], widened by {tolerance:.0%}"
            exps.append(
                _exp("expect_column_values_to_be_between", WARNING, note, column=col, min_value=lo, max_value=hi)
            )
            exps.append(
                _exp(
                    "expect_column_values_to_be_between",
                    CRITICAL,
                    note,
                    column=col,
                    min_value=lo,
                    max_value=hi,
                    mostly=mostly,
                )
            )
            continue
        distinct = values.unique()
        if len(values) and (col in categorical or len(distinct) <= min(max_categories, max(2, len(values) // 2))):
            domain = sorted((plain(v) for v in distinct), key=str)
            note = f"{len(domain)} categories seen in the reference"
            exps.append(_exp("expect_column_values_to_be_in_set", WARNING, note, column=col, value_set=domain))
            exps.append(
                _exp("expect_column_values_to_be_in_set", CRITICAL, note, column=col, value_set=domain, mostly=mostly)
            )
    sizes = _batch_sizes(frame)
    exps.append(
        _exp(
            "expect_table_row_count_to_be_between",
            CRITICAL,
            f"reference batches of {min(sizes)}..{max(sizes)} rows, x{row_count_factor:g} either way",
            min_value=max(1, int(min(sizes) / row_count_factor)),
            max_value=int(math.ceil(max(sizes) * row_count_factor)),
        )
    )
    if not cfg.id_column and not data.duplicated().any():
        exps.append(
            _exp(
                "expect_compound_columns_to_be_unique",
                WARNING,
                "no duplicated rows in the reference",
                column_list=columns,
            )
        )
    suite = {
        "name": cfg.name,
        "expectations": exps,
        "meta": {
            "airloop": f"suggested by `airloop suggest-suite {cfg.name}` from {len(frame)} reference rows on "
            f"{datetime.now(UTC).date().isoformat()}; review and edit before committing",
        },
    }
    return check_suite(suite, f"suggested suite for {cfg.name!r}")


def reference_frame(cfg: PipelineConfig, source: str | None = None) -> pd.DataFrame:
    """Reference data: a local file (CSV/Parquet/JSONL) when ``source`` is given, else every validated batch
    of the pipeline in the lake (falling back to staged batches when none is validated yet)."""
    from airloop.data.parse import format_of, parse_bytes
    from airloop.store.lake import Lake, read_bytes

    if source:
        uri = source if "://" in source else Path(source).resolve().as_uri()
        return parse_bytes(uri, read_bytes(uri), format_of(uri, None))
    lake = Lake(cfg.name)
    for zone in ("validated", "staged"):
        frame = lake.read_zone(zone)
        if not frame.empty:
            return frame
    raise SuggestError(
        f"pipeline {cfg.name!r}: no validated or staged batches in {lake.root}; run `airloop run {cfg.name}` "
        "first or pass --from FILE"
    )


def write_suite(cfg: PipelineConfig, suite: dict, path: Path | None = None, overwrite: bool = False) -> Path:
    """Write the suite as pretty JSON to ``include/gx/NAME.json`` (or ``path``); refuses to overwrite a
    reviewed suite unless asked."""
    path = path or suite_path(cfg)
    if path.exists() and not overwrite:
        raise SuggestError(f"{path}: a suite exists already; expected --force to replace it (or --output FILE)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(suite, indent=2, default=str) + "\n", encoding="utf-8")
    return path
