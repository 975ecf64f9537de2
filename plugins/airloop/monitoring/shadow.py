"""The shadow comparison: :func:`shadow_report` takes a pipeline config (and a lake, and days) and returns how
the shadow challenger's served predictions compare with the champion's, from the serving log, with each
side's accuracy once delayed labels arrive; it writes the report as JSON and HTML to ``reports/shadow/``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

from airloop.config import PipelineConfig
from airloop.serving.servinglog import read_serving_log
from airloop.store import lake as lk
from airloop.store.lake import Lake


def shadow_report(cfg: PipelineConfig, *, lake: Lake | None = None, days: list[str] | None = None) -> dict:
    """Compare the shadow challenger with the champion on the rows both scored (from the serving log).

    Returns {"rows", "champion_versions", "shadow_versions", "agreement", "mean_abs_probability_diff",
    "prediction_counts", "live" (per side, once delayed labels arrive), "uri"} and writes it as JSON and HTML
    to ``reports/shadow/``. ``rows`` is 0 when nothing was served in shadow mode.
    """
    lake = lake or Lake(cfg.name)
    served = read_serving_log(lake, days)
    both = served[served["shadow_prediction"].notna()] if "shadow_prediction" in served.columns else served.iloc[0:0]
    doc: dict[str, Any] = {"pipeline": cfg.name, "rows": len(both), "generated_at": dt.datetime.now(dt.UTC).isoformat()}
    if both.empty:
        doc["summary"] = f"{cfg.name}: no prediction was served in shadow mode yet"
        return doc
    champ, shadow = both["prediction"].astype(str), both["shadow_prediction"].astype(str)
    doc.update(
        {
            "champion_versions": sorted(both["model_version"].astype(str).unique()),
            "shadow_versions": sorted(both["shadow_version"].astype(str).unique()),
            "agreement": round(float((champ == shadow).mean()), 4),
            "prediction_counts": {
                "champion": champ.value_counts().to_dict(),
                "shadow": shadow.value_counts().to_dict(),
            },
        }
    )
    if both["probability"].notna().any() and both["shadow_probability"].notna().any():
        doc["mean_abs_probability_diff"] = round(
            float((both["probability"] - both["shadow_probability"]).abs().mean()), 4
        )
    doc["live"] = _shadow_live(cfg, lake, both)
    doc["summary"] = (
        f"{cfg.name}: shadow v{','.join(doc['shadow_versions'])} vs champion v{','.join(doc['champion_versions'])} "
        f"on {len(both)} served rows: agreement {doc['agreement']:.1%}"
        + (
            f", mean |Δprobability| {doc['mean_abs_probability_diff']:.4f}"
            if "mean_abs_probability_diff" in doc
            else ""
        )
    )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    doc["uri"] = lk.write_json(lake.report("shadow", f"{stamp}.json"), doc)
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in doc.items() if k not in ("uri",))
    lk.write_bytes(
        lake.report("shadow", f"{stamp}.html"),
        f"<html><body><h1>Shadow report</h1><table>{rows}</table></body></html>".encode(),
    )
    return doc


def _shadow_live(cfg: PipelineConfig, lake: Lake, both: pd.DataFrame) -> dict:
    """Accuracy of each side on served rows whose delayed label arrived (joined on the client's id)."""
    if not cfg.id_column or "entity_id" not in both.columns or both["entity_id"].isna().all():
        return {}
    labels = lake.read_zone("labels")
    if labels.empty or cfg.id_column not in labels.columns:
        return {}
    truth = labels.drop_duplicates(cfg.id_column, keep="last").set_index(cfg.id_column)[cfg.target].astype(str)
    y = both["entity_id"].map(truth)
    known = y.notna()
    if not known.any():
        return {}
    return {
        "rows": int(known.sum()),
        "champion_accuracy": round(float((both["prediction"].astype(str)[known] == y[known]).mean()), 4),
        "shadow_accuracy": round(float((both["shadow_prediction"].astype(str)[known] == y[known]).mean()), 4),
    }
