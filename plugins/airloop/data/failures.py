"""What a failed GX expectation means, in words: GX 1.x validation results turned into small JSON-able dicts.

:func:`failure_from_result` gives {"expectation", "column", "unexpected_percent", "details"} for one failed
expectation; :func:`add_type_share` adds the share of non-numeric values GX leaves out for a wrong type.
:mod:`airloop.data.validate` reports these in its outcome, the manifest and MLflow.
"""

from __future__ import annotations

import math

import pandas as pd

_DETAILS_MAX_CHARS = 160


def exception_message(info: dict | None) -> str | None:
    """GX reports errors either flat or keyed by metric id; return the first message."""
    if not info:
        return None
    entries = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for entry in entries:
        if entry.get("raised_exception", True) and entry.get("exception_message"):
            return str(entry["exception_message"]).removeprefix("Error: ")
    return None


def _short(text: str) -> str:
    return text if len(text) <= _DETAILS_MAX_CHARS else text[: _DETAILS_MAX_CHARS - 3] + "..."


def failure_from_result(exp_type: str, kwargs: dict, result: dict, error: str | None) -> dict:
    """One failed expectation as a JSON-able dict: expectation, column, unexpected_percent, details."""
    pct = result.get("unexpected_percent_total")  # share of all rows; GX's unexpected_percent skips nulls
    if pct is None:
        pct = result.get("unexpected_percent")
    if error:
        details = f"error: {error}"
    elif exp_type == "expect_column_to_exist":
        details = "column not in the batch"
    elif (result.get("details") or {}).get("mismatched"):
        mismatched = result["details"]["mismatched"]
        details = "; ".join(f"{k} columns {v}" for k, v in sorted(mismatched.items(), reverse=True))
    elif "observed_value" in result:
        details = f"observed {result['observed_value']}"
    elif result.get("unexpected_count") is not None:
        details = f"{result['unexpected_count']} of {result.get('element_count')} rows"
        # GX's partial_unexpected_counts count within a 20-row sample only, so show values, not counts.
        examples = [repr(c["value"]) for c in (result.get("partial_unexpected_counts") or [])[:3]]
        if examples and exp_type != "expect_column_values_to_not_be_null":
            details += f", e.g. {', '.join(examples)}"
    else:
        details = ""
    column = kwargs.get("column")
    return {
        "expectation": exp_type,
        "column": str(column) if column is not None else None,
        "unexpected_percent": round(float(pct), 3) if pct is not None and math.isfinite(pct) else None,
        "details": _short(details),
    }


def add_type_share(failure: dict, kwargs: dict, data: pd.DataFrame) -> None:
    """GX reports a column's wrong type without a share of rows; for a numeric type list, count the values
    that are not numbers, so the message says how much of the column went bad."""
    numeric = {"int64", "float64", "int32", "float32", "Int64", "Float64"}
    col = kwargs.get("column")
    wanted = set(kwargs.get("type_list") or [kwargs.get("type_")] or [])
    if failure["unexpected_percent"] is not None or col not in data.columns or not wanted & numeric:
        return
    values = data[col]
    bad = values.notna() & pd.to_numeric(values, errors="coerce").isna()
    if len(values):
        failure["unexpected_percent"] = round(float(bad.mean() * 100), 3)
        examples = ", ".join(repr(v) for v in values[bad].unique()[:3])
        failure["details"] = _short(
            f"{failure['details']}; {int(bad.sum())} of {len(values)} values not numeric"
            + (f", e.g. {examples}" if examples else "")
        )
