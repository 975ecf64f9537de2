"""The one model loader: every stage that needs a registered model (evaluate, score, monitor, serve) loads it here.

``version_uri`` names a version by number (``models:/NAME/VERSION``), so a concurrent alias move cannot mix
versions; ``load_uri`` loads the sklearn flavor of a model URI and returns the fitted estimator or pipeline.
"""

from __future__ import annotations

from typing import Any

from airloop.config import PipelineConfig


def version_uri(cfg: PipelineConfig, version: str | int) -> str:
    """``models:/airloop-<pipeline>/<version>``."""
    return f"models:/{cfg.registered_model_name}/{version}"


def load_uri(uri: str) -> Any:
    """The fitted sklearn object behind ``uri`` (a ``models:/`` or ``runs:/`` URI)."""
    import mlflow.sklearn

    return mlflow.sklearn.load_model(uri)


def load_version(cfg: PipelineConfig, version: str | int) -> Any:
    """The fitted sklearn object of version ``version`` of the pipeline's registered model."""
    return load_uri(version_uri(cfg, version))
