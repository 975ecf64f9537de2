"""One registered version made ready to serve: :func:`load_version` takes a pipeline config and a version
number and returns a :class:`LoadedModel` (the estimator, its run, its input spec and, when it reproduces the
pipeline, its compiled scoring path). Models are loaded through :mod:`airloop.store.models`, the one loader.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from airloop.config import PipelineConfig
from airloop.model.conformal import conformal_tags
from airloop.serving.compiled import CompiledPipeline, EstimatorScorer, compile_pipeline
from airloop.serving.spec import Column, input_columns
from airloop.store import models

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model version ready to serve: the estimator, its version and run, and its precomputed input spec."""

    model: Any
    version: str
    run_id: str
    columns: list[Column]
    classes: np.ndarray | None = None
    compiled: CompiledPipeline | None = None
    # The split-conformal threshold and declared coverage the gate recorded on the version (None when it was
    # not calibrated): each served row's set or interval is computed from it (airloop.model.conformal).
    conformal_threshold: float | None = None
    conformal_coverage: float | None = None
    loaded_at: float = field(default_factory=time.time)
    sklearn: EstimatorScorer = field(init=False)  # the pipeline itself, one thread for small batches

    def __post_init__(self) -> None:
        self.sklearn = EstimatorScorer(self.model)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def path(self) -> str:
        """The scoring path: ``compiled+forest``, ``compiled+hgb``, ``compiled+estimator`` or ``sklearn``."""
        return self.compiled.path if self.compiled is not None else "sklearn"


def load_version(cfg: PipelineConfig, version: str) -> LoadedModel:
    """Load ``models:/NAME/version`` (sklearn flavor) with its input spec."""
    import mlflow
    import mlflow.sklearn
    from mlflow.tracking import MlflowClient

    uri = models.version_uri(cfg, version)
    mv = MlflowClient().get_model_version(cfg.registered_model_name, str(version))
    model = models.load_uri(uri)
    signature = mlflow.models.get_model_info(uri).signature
    classes = getattr(model, "classes_", None) if cfg.task == "classification" else None
    columns = input_columns(model, signature)
    threshold, coverage = conformal_tags(dict(mv.tags or {}))
    compiled = compile_pipeline(model, columns, cfg.task)
    loaded = LoadedModel(model, str(version), mv.run_id, columns, classes, compiled, threshold, coverage)
    log.info(
        "%s v%s (%s) scores through the %s path",
        cfg.registered_model_name,
        version,
        type(getattr(model, "named_steps", {}).get("model", model)).__name__,
        loaded.path,
    )
    if threshold is None and cfg.serving.review_by != "probability":
        log.warning(
            "v%s has no conformal threshold (airloop.conformal.threshold): serving.review_by %r falls back to "
            "serving.low_confidence_threshold (%s) for this version",
            version,
            cfg.serving.review_by,
            cfg.serving.low_confidence_threshold,
        )
    return loaded
