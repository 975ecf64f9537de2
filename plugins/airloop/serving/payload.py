"""Request bodies in MLflow's scoring-server formats: :func:`parse_payload` takes the raw body, the model's
input spec and a row limit, and returns {column: values} in the model's column order, or raises
:class:`PayloadError` (an HTTP status and a message naming the field).

Every value is checked before the request joins a micro-batch, so one poisonous request cannot fail the
others: integers of more than :data:`MAX_INT_DIGITS` digits, NaN, infinities and numbers beyond
:data:`NUMBER_LIMIT` (the float32 range tree models compute in) are refused with 422 naming the column and
row; nesting too deep for the JSON parser is a 400 naming the body.
"""

from __future__ import annotations

import json
from typing import Any

from airloop.serving.loaded import LoadedModel

PAYLOAD_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
MAX_INT_DIGITS = 30  # longer integer literals are never parsed into Python ints (a 400-digit one is refused)
NUMBER_LIMIT = 3.4028234663852886e38  # float32 max: the largest magnitude every candidate model can take


class PayloadError(ValueError):
    """A request body that cannot be scored; ``status`` is the HTTP code, the message names the field."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _describe(value: Any) -> str:
    if isinstance(value, _HugeInt):
        return repr(value)
    text = repr(value)
    return f"{text[:60]}... ({type(value).__name__})" if len(text) > 60 else f"{text} ({type(value).__name__})"


def _check_rows(rows: Any, field_name: str, max_rows: int) -> list:
    if not isinstance(rows, list):
        raise PayloadError(f"field '{field_name}': expected a list of rows, found {_describe(rows)}")
    if not rows:
        raise PayloadError(f"field '{field_name}': expected at least one row, found an empty list")
    if len(rows) > max_rows:
        raise PayloadError(f"field '{field_name}': expected at most {max_rows} rows, found {len(rows)}", status=413)
    return rows


def _from_records(rows: list, field_name: str, names: list[str]) -> dict[str, list]:
    cols: dict[str, list] = {n: [] for n in names}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise PayloadError(
                f"field '{field_name}[{i}]': expected an object of column: value, found {_describe(row)}"
            )
        for n in names:
            cols[n].append(row.get(n, _MISSING))
    return cols


def _from_lists(rows: list, columns: list, field_name: str, names: list[str]) -> dict[str, list]:
    width = len(columns)
    position = {str(c): j for j, c in enumerate(columns)}
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            raise PayloadError(
                f"field '{field_name}[{i}]': expected a list of {width} values (one per column), found {_describe(row)}"
            )
    out = {}
    for n in names:
        j = position.get(n)
        out[n] = [_MISSING] * len(rows) if j is None else [row[j] for row in rows]
    return out


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


class _HugeInt:
    """An integer literal too long to be a feature value; kept as text so refusing it costs nothing."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return f"an integer of {len(self.text.lstrip('-'))} digits ({self.text[:12]}...)"


def _parse_int(text: str) -> int | _HugeInt:
    return int(text) if len(text) <= MAX_INT_DIGITS else _HugeInt(text)


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body, parse_int=_parse_int)
    except RecursionError:
        raise PayloadError("body: expected JSON nested a few levels deep, found nesting too deep to parse") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise PayloadError(f"body: expected a JSON object, found invalid JSON ({str(err)[:200]})") from None


def parse_payload(body: bytes, spec: LoadedModel, max_rows: int) -> dict[str, list]:
    """{column: values} of a request body (see :func:`parse_request`)."""
    return parse_request(body, spec, max_rows)[0]


def parse_request(
    body: bytes, spec: LoadedModel, max_rows: int, id_column: str | None = None
) -> tuple[dict[str, list], list | None]:
    """A request body as ({column: values} in the model's column order, the id column's values or None);
    raises PayloadError naming the field. The body is parsed once.

    Accepts ``dataframe_split`` ({"columns": [...], "data": [[...]]}), ``dataframe_records`` ([{...}]) and
    ``instances``/``inputs`` (a list of objects, or of lists in the model's column order). Extra columns are
    ignored, as MLflow does; a missing required column or a value of the wrong type is refused.
    """
    doc = _loads(body)
    if not isinstance(doc, dict):
        raise PayloadError(f"body: expected a JSON object with one of {list(PAYLOAD_KEYS)}, found {_describe(doc)}")
    keys = [k for k in PAYLOAD_KEYS if k in doc]
    unknown = [k for k in doc if k not in PAYLOAD_KEYS and k != "params"]
    if unknown or len(keys) != 1:
        found = f"keys {sorted(doc)}" if doc else "an empty object"
        raise PayloadError(f"body: expected exactly one of the fields {list(PAYLOAD_KEYS)}, found {found}")
    key = keys[0]
    names = spec.names
    if key == "dataframe_split":
        split = doc[key]
        if not isinstance(split, dict):
            raise PayloadError(
                f"field 'dataframe_split': expected an object with 'columns' and 'data', found {_describe(split)}"
            )
        columns = split.get("columns")
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise PayloadError(
                f"field 'dataframe_split.columns': expected a list of column names, found {_describe(columns)}"
            )
        rows = _check_rows(split.get("data"), "dataframe_split.data", max_rows)
        cols = _from_lists(rows, columns, "dataframe_split.data", names)
        entity = _from_lists(rows, columns, "dataframe_split.data", [id_column])[id_column] if id_column else None
    else:
        rows = _check_rows(doc[key], key, max_rows)
        if isinstance(rows[0], list):
            cols, entity = _from_lists(rows, names, key, names), None
        else:
            cols = _from_records(rows, key, names)
            entity = [r.get(id_column) for r in rows] if id_column else None
    _check_columns(cols, spec, key)
    if entity is not None:
        entity = None if all(e is _MISSING or e is None for e in entity) else [_plain_id(e) for e in entity]
    return cols, entity


def _plain_id(value: Any) -> str | None:
    """An entity id as text for the log (None when absent); anything but a short scalar is not an id."""
    if value is None or value is _MISSING:
        return None
    if type(value) in (str, int, float, bool):
        return str(value)[:200]
    return None


def _check_columns(cols: dict[str, list], spec: LoadedModel, field_name: str) -> None:
    """Refuse missing required columns and values of the wrong type, naming the column and the row."""
    missing = [c.name for c in spec.columns if c.required and any(v is _MISSING for v in cols[c.name])]
    if missing:
        raise PayloadError(
            f"field '{field_name}': missing required column(s) {missing}; expected columns {spec.names}", status=422
        )
    for c in spec.columns:
        values = cols[c.name]
        for i, v in enumerate(values):
            if v is None or v is _MISSING:
                values[i] = None
                continue
            t = type(v)
            if t is float and not -NUMBER_LIMIT <= v <= NUMBER_LIMIT:  # NaN, infinities, beyond float32
                raise PayloadError(
                    f"field '{field_name}', column '{c.name}' (row {i}): expected a finite number within "
                    f"±{NUMBER_LIMIT:.3g} or null, found {_describe(v)}",
                    status=422,
                )
            if t is int and not -NUMBER_LIMIT <= v <= NUMBER_LIMIT:
                raise PayloadError(
                    f"field '{field_name}', column '{c.name}' (row {i}): expected a number within "
                    f"±{NUMBER_LIMIT:.3g} or null, found an integer of {len(str(abs(v)))} digits",
                    status=422,
                )
            if c.kind == "number":
                ok, expected = t is int or t is float, "a finite number or null"
            elif c.kind == "string":
                ok, expected = t is str, "a string or null"
            elif c.kind == "boolean":
                ok, expected = t is bool, "true, false or null"
            else:
                ok, expected = t in (str, int, float, bool), "a string, number, boolean or null"
            if not ok:
                raise PayloadError(
                    f"field '{field_name}', column '{c.name}' (row {i}): expected {expected}, found {_describe(v)}",
                    status=422,
                )
