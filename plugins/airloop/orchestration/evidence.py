"""What a task produced, as references the Airflow UI links to: the MLflow run, the model version, the model
card, the drift report and the Data Docs. Pure: no Airflow, no MLflow.

``dagkit.call`` records :func:`references` of each stage result in XCom ``airloop_links``; the UI plugin
(:mod:`airloop.orchestration.ui`) turns them into links. Nothing is guessed: a link exists only when the stage
returned the reference.
"""

from __future__ import annotations

from typing import Any

XCOM_KEY = "airloop_links"

# stage-result key -> kind of evidence (the order is the order the UI lists them in)
RESULT_KEYS = {
    "run_id": "mlflow_run",
    "mlflow_run_id": "mlflow_run",
    "version": "model_version",
    "model_card_uri": "model_card",
    "verdict_uri": "gate_verdict",
    "report_uri": "drift_report",
    "data_docs": "data_docs",
    "profile_uri": "profile",
}
LABELS = {
    "mlflow_run": "MLflow run",
    "model_version": "Model version",
    "model_card": "Model card",
    "gate_verdict": "Gate verdict (JSON)",
    "drift_report": "Drift report",
    "data_docs": "Data Docs",
    "profile": "Profile report",
}


def references(result: Any, pipeline: str | None = None) -> list[dict[str, str]]:
    """The references in one stage result (a dict, or a list of them): [{"kind", "ref", "pipeline",
    "batch_id"?}, ...], without duplicates. Unknown shapes give []."""
    items = result if isinstance(result, list) else [result]
    out: list[dict[str, str]] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        for key, kind in RESULT_KEYS.items():
            value = item.get(key)
            if value in (None, "") or not isinstance(value, str | int):
                continue
            ref = {"kind": kind, "ref": str(value)}
            if pipeline:
                ref["pipeline"] = pipeline
            if item.get("batch_id"):
                ref["batch_id"] = str(item["batch_id"])
            if ref not in out:
                out.append(ref)
    return out


def merge(*groups: list[dict[str, str]]) -> list[dict[str, str]]:
    """Several reference lists as one, in order, without duplicates."""
    out: list[dict[str, str]] = []
    for group in groups:
        for ref in group or []:
            if ref not in out:
                out.append(ref)
    return out
