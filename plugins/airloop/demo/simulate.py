"""Demo data: a deterministic customer-churn simulator that writes daily batches, with a drift on a known day.

Numeric and categorical features, missing values, class imbalance (about 20% churn), and labels that arrive
``label_delay_days`` after the features in a separate feed. Nothing is downloaded.

Files written under ``out_dir``::

    landing/churn_YYYY-MM-DD.csv         day 0 (the day before ``start``): a labeled month of history
    landing/churn_YYYY-MM-DD.csv         daily feature batches, no target
    labels/labels_YYYY-MM-DD.csv         labels that arrived that day (customer_id, churned)
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from airloop.demo.spec import SimulationSpec  # noqa: F401 - re-exported: the spec is part of this module's API

CONTRACTS = ["month-to-month", "one_year", "two_year"]
PAYMENTS = ["electronic_check", "mailed_check", "bank_transfer", "credit_card"]
INTERNET = ["dsl", "fiber", "none"]
REGIONS = ["north", "south", "east", "west"]


def _customers(rng: np.random.Generator, n: int, drifted: bool) -> pd.DataFrame:
    contract_p = [0.35, 0.3, 0.35] if not drifted else [0.75, 0.15, 0.10]
    internet_p = [0.4, 0.4, 0.2] if not drifted else [0.2, 0.7, 0.1]
    contract = rng.choice(CONTRACTS, size=n, p=contract_p)
    internet = rng.choice(INTERNET, size=n, p=internet_p)
    tenure = rng.integers(0, 73, size=n)
    base = np.where(internet == "fiber", 85.0, np.where(internet == "dsl", 55.0, 25.0))
    charges = base + rng.normal(0, 12, size=n) + (25.0 if drifted else 0.0)
    charges = np.clip(charges, 15, 150).round(2)
    total = (charges * np.maximum(tenure, 1) * rng.uniform(0.9, 1.05, size=n)).round(2)
    frame = pd.DataFrame(
        {
            "tenure_months": tenure,
            "monthly_charges": charges,
            "total_charges": total,
            "contract": contract,
            "payment_method": rng.choice(PAYMENTS, size=n, p=[0.35, 0.2, 0.22, 0.23]),
            "internet_service": internet,
            "support_calls": rng.poisson(2.0 if not drifted else 3.5, size=n).clip(0, 15),
            "region": rng.choice(REGIONS, size=n),
            "senior": (rng.random(n) < 0.16).astype(int),
        }
    )
    # Missing values, as real CRM exports have them.
    frame.loc[rng.random(n) < 0.03, "monthly_charges"] = np.nan
    frame.loc[rng.random(n) < 0.02, "total_charges"] = np.nan
    return frame


def _churn(rng: np.random.Generator, frame: pd.DataFrame, drifted: bool) -> np.ndarray:
    """The true label model; after the drift, price sensitivity and support calls matter more."""
    charges = frame["monthly_charges"].fillna(70.0).to_numpy()
    logit = (
        -1.9
        + np.where(frame["contract"] == "month-to-month", 1.3, np.where(frame["contract"] == "one_year", -0.2, -1.4))
        - 0.03 * frame["tenure_months"].to_numpy()
        + 0.22 * frame["support_calls"].to_numpy()
        + 0.5 * (frame["payment_method"] == "electronic_check").to_numpy()
        + 0.3 * frame["senior"].to_numpy()
    )
    if drifted:
        logit = logit + 0.045 * (charges - 95.0) + 0.25 * (frame["support_calls"].to_numpy() - 3.0)
        logit = logit - 0.9 * (frame["internet_service"] == "fiber").to_numpy()
    else:
        logit = logit + 0.012 * (charges - 70.0)
    return (rng.random(len(frame)) < 1.0 / (1.0 + np.exp(-logit))).astype(int)


def _batch(rng: np.random.Generator, n: int, day: dt.date, first_id: int, drifted: bool) -> pd.DataFrame:
    frame = _customers(rng, n, drifted)
    frame.insert(0, "customer_id", [f"C{first_id + i:07d}" for i in range(n)])
    seconds = np.sort(rng.integers(0, 86_400, size=n))
    start = pd.Timestamp(day)
    frame.insert(1, "event_time", start + pd.to_timedelta(seconds, unit="s"))
    frame["churned"] = _churn(rng, frame, drifted)
    return frame


def simulate(out_dir: str | Path, spec: SimulationSpec | None = None) -> dict:
    """Write the history, the daily batches and the delayed labels feed; returns what was written.

    The same spec always writes the same bytes.
    """
    spec = spec or SimulationSpec()
    out = Path(out_dir)
    (out / "landing").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    history_day = spec.start - dt.timedelta(days=1)
    history = _batch(rng, spec.history_rows, history_day, 0, drifted=False)
    # The history spans the month before the start, so the time-aware split has a real timeline.
    offsets = np.sort(rng.integers(0, 30, size=len(history)))
    history["event_time"] = history["event_time"] - pd.to_timedelta(30 - offsets, unit="D")
    history.to_csv(out / "landing" / f"churn_{history_day.isoformat()}.csv", index=False)

    next_id = spec.history_rows
    days = []
    pending: dict[dt.date, list[pd.DataFrame]] = {}
    for i in range(1, spec.days + 1):
        day = spec.start + dt.timedelta(days=i - 1)
        batch = _batch(rng, spec.daily_rows, day, next_id, drifted=i >= spec.drift_day)
        next_id += spec.daily_rows
        batch.drop(columns=["churned"]).to_csv(out / "landing" / f"churn_{day.isoformat()}.csv", index=False)
        pending.setdefault(day + dt.timedelta(days=spec.label_delay_days), []).append(batch[["customer_id", "churned"]])
        days.append(day.isoformat())
    for arrival, frames in sorted(pending.items()):
        pd.concat(frames).to_csv(out / "labels" / f"labels_{arrival.isoformat()}.csv", index=False)
    drift_start = spec.start + dt.timedelta(days=spec.drift_day - 1)
    return {
        "landing": (out / "landing").as_uri(),
        "labels": (out / "labels").as_uri(),
        "history_day": history_day.isoformat(),
        "days": days,
        "drift_starts": drift_start.isoformat(),
    }
