"""Regenerate the bad-input corpus (deterministic): ``python tests/data/make_corpus.py``.

``reference.csv`` is clean data of the ``shop`` test pipeline (``suite.json`` is what ``suggest_suite`` makes of
it); every other file is one kind of bad input, listed with its expected error in ``README.md``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def clean(rows: int, seed: int, day: str = "2026-01-05") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": [f"C{seed:02d}{i:05d}" for i in range(rows)],
            "event_time": pd.date_range(day, periods=rows, freq="min").strftime("%Y-%m-%d %H:%M:%S"),
            "tenure_months": rng.integers(0, 73, rows),
            "monthly_charges": rng.uniform(15, 120, rows).round(2),
            "contract": rng.choice(["month-to-month", "one_year", "two_year"], rows),
            "region": rng.choice(["north", "south", "east", "west"], rows),
            "churned": rng.integers(0, 2, rows),
        }
    )


def csv(frame: pd.DataFrame, **kwargs) -> bytes:
    return frame.to_csv(index=False, **kwargs).encode("utf-8")


def main() -> None:
    (HERE / "reference.csv").write_bytes(csv(clean(300, 1, "2026-01-01")))
    good = clean(60, 2)
    (HERE / "good.csv").write_bytes(csv(good))
    cases: dict[str, bytes] = {
        "empty.csv": b"",
        "header_only.csv": csv(good.iloc[:0]),
        "wrong_delimiter.csv": csv(good, sep=";"),
        "not_utf8.csv": csv(good).replace(b"north", "nörth".encode("latin-1")),
        "missing_target.csv": csv(good.drop(columns=["churned"])),
        "extra_column.csv": csv(good.assign(coupon_code="X1")),
        "numeric_as_text.csv": csv(good.assign(tenure_months=good["tenure_months"].astype(str) + " months")),
        "all_null_column.csv": csv(good.assign(monthly_charges=np.nan)),
        "duplicates.csv": csv(pd.concat([good, good.iloc[:12]], ignore_index=True)),
        "out_of_range.csv": csv(good.assign(tenure_months=np.where(np.arange(60) < 9, -40, good["tenure_months"]))),
        "unseen_category.csv": csv(good.assign(region=np.where(np.arange(60) < 6, "central", good["region"]))),
    }
    buf = io.BytesIO()
    good.to_parquet(buf, index=False)
    cases["truncated.parquet"] = buf.getvalue()[: len(buf.getvalue()) // 2]
    for name, data in cases.items():
        (HERE / name).write_bytes(data)


if __name__ == "__main__":
    main()
