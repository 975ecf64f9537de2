"""``POST /explain``: the champion's prediction for each row with its top SHAP contributions (see
:mod:`airloop.model.explain`) and, when the version was calibrated at the gate, its conformal prediction set or
interval (:mod:`airloop.model.conformal`).

Explaining costs far more than scoring, so it is a separate route that only runs when someone asks: the
``POST /invocations`` fast path does not change. The explainer of a version is built once (background rows from
the version's training reference) and kept until the version changes.
"""

# No ``from __future__ import annotations``: FastAPI reads the route's annotations (Request) at registration.
import asyncio
import logging
from typing import Any

import pandas as pd

from airloop.config import PipelineConfig

log = logging.getLogger(__name__)

MAX_EXPLAIN_ROWS = 100


class Explanations:
    """Per-version explainer cache and the work behind ``POST /explain``."""

    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self._by_version: dict[str, tuple[Any, float | None]] = {}

    def _prepare(self, loaded: Any) -> tuple[Any, float | None]:
        from mlflow.tracking import MlflowClient

        from airloop.model.explain import explainer_for_run

        if loaded.version in self._by_version:
            return self._by_version[loaded.version]
        tags = MlflowClient().get_run(loaded.run_id).data.tags
        try:
            explainer = explainer_for_run(loaded.model, tags, seed=self.cfg.training.seed)
        except ValueError as err:
            raise ValueError(f"model v{loaded.version}: {err}") from None
        self._by_version = {loaded.version: (explainer, loaded.conformal_threshold)}
        return self._by_version[loaded.version]

    def explain(self, loaded: Any, cols: dict[str, list], top: int) -> dict[str, Any]:
        from airloop.model.conformal import uncertainty
        from airloop.model.explain import top_contributions
        from airloop.model.metrics import predict_with_proba

        explainer, threshold = self._prepare(loaded)
        frame = pd.DataFrame(cols)[loaded.names]
        y_pred, y_proba, classes = predict_with_proba(self.cfg.task, loaded.model, frame)
        rows = top_contributions(explainer, frame, top=top)
        if threshold is not None and (self.cfg.task == "regression" or y_proba is not None):
            for row, extra in zip(rows, uncertainty(self.cfg.task, y_pred, y_proba, classes, threshold), strict=True):
                row.update(extra)
        return {
            "model_version": loaded.version,
            "predictions": [p.item() if hasattr(p, "item") else p for p in y_pred],
            "explainer": explainer.kind,
            "explanations": rows,
        }


def add_explain_route(app: Any, server: Any, cfg: PipelineConfig) -> None:
    """Register ``POST /explain?top=N`` on the FastAPI ``app`` (same bodies as ``/invocations``, at most
    MAX_EXPLAIN_ROWS rows)."""
    from fastapi import Request
    from fastapi.responses import JSONResponse

    from airloop.serving.payload import PayloadError, parse_payload

    explanations = Explanations(cfg)

    @app.post("/explain")
    async def explain(request: Request, top: int = 5) -> JSONResponse:
        loaded = server.current
        if loaded is None:
            return JSONResponse({"error_code": "SERVICE_UNAVAILABLE", "message": "no champion loaded"}, 503)
        try:
            cols = parse_payload(await request.body(), loaded, min(cfg.serving.max_request_rows, MAX_EXPLAIN_ROWS))
        except PayloadError as err:
            return JSONResponse({"error_code": "BAD_REQUEST", "message": str(err)}, err.status)
        try:
            doc = await asyncio.to_thread(explanations.explain, loaded, cols, max(1, min(top, 50)))
        except Exception as err:  # the explainer failed on this model: say so, scoring is unaffected
            log.exception("explanation failed")
            return JSONResponse({"error_code": "INTERNAL_ERROR", "message": f"explanation failed: {err}"}, 500)
        return JSONResponse(doc)
