"""The input spec of a served model: which columns it takes, of what kind, and the frame it was trained on.

:func:`input_columns` takes a fitted model and its MLflow signature and returns its :class:`Column` list (once
per model version, never per request); :func:`to_frame` takes parsed request columns and returns the pandas
frame the sklearn pipeline expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Column:
    """One input column: ``kind`` is "number", "string", "boolean" or "any"; ``required`` from the signature."""

    name: str
    kind: str
    required: bool = True


_SIGNATURE_KINDS = {
    "double": "number",
    "float": "number",
    "long": "number",
    "integer": "number",
    "string": "string",
    "boolean": "boolean",
}


def input_columns(model: Any, signature: Any | None) -> list[Column]:
    """The input columns of a model, in signature order: their kind from the signature, or (for columns the
    signature declares ``Any``) from the preprocessing step (numeric or categorical transformer)."""
    by_prep: dict[str, str] = {}
    prep = getattr(model, "named_steps", {}).get("prep")
    for name, _, cols in getattr(prep, "transformers_", None) or getattr(prep, "transformers", []):
        for col in cols if isinstance(cols, list | tuple) else []:
            by_prep[str(col)] = "number" if name == "num" else "any"
    if signature is not None and signature.inputs is not None and signature.inputs.has_input_names():
        out = []
        for spec in signature.inputs.inputs:
            kind = _SIGNATURE_KINDS.get(str(getattr(spec.type, "name", spec.type)).lower())
            out.append(Column(spec.name, kind or by_prep.get(spec.name, "any"), bool(getattr(spec, "required", True))))
        return out
    if by_prep:
        return [Column(n, k) for n, k in by_prep.items()]
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        raise ValueError("the model has neither a signature with column names nor feature_names_in_")
    return [Column(str(n), "any") for n in names]


def to_frame(cols: dict[str, list], columns: list[Column]) -> pd.DataFrame:
    """The parsed columns as the frame the model was trained on (numbers as float64, NaN for null)."""
    data = {}
    for c in columns:
        values = cols[c.name]
        if c.kind == "number":
            data[c.name] = np.array([np.nan if v is None else v for v in values], dtype="float64")
        else:
            data[c.name] = pd.array(values, dtype=object)
    return pd.DataFrame(data)
