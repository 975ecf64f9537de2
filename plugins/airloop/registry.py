"""The MLflow model registry, driven by aliases: ``challenger`` (blessed by the gate) and ``champion``
(serving). The legacy stages (Staging, Production, Archived) are mirrored for older tooling while this MLflow
still has them; aliases are the source of truth.

One registered model per pipeline, named ``cfg.registered_model_name`` (``airloop-<pipeline>``).
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

from airloop import tracking
from airloop.config import PipelineConfig
from airloop.errors import BadInput, NothingToDo

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"


def _client() -> MlflowClient:
    tracking.configure_mlflow()
    return MlflowClient()


def _missing(err: MlflowException) -> bool:
    return err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)


def _registered_model(client: MlflowClient, name: str):
    try:
        return client.get_registered_model(name)
    except MlflowException as err:
        if _missing(err):
            return None
        raise


def get_version(cfg: PipelineConfig, alias: str) -> ModelVersion | None:
    """The model version holding ``alias``; None when the registered model or the alias does not exist."""
    client = _client()
    model = _registered_model(client, cfg.registered_model_name)
    if model is None:
        return None
    # Read the alias map rather than get_model_version_by_alias: stores disagree on the error code of an
    # unknown alias (SQL stores say INVALID_PARAMETER_VALUE).
    version = (model.aliases or {}).get(alias)
    if version is None:
        return None
    return client.get_model_version(cfg.registered_model_name, str(version))


def _mirror_stage(client: MlflowClient, name: str, version: str, stage: str) -> None:
    """Set the legacy stage too (deprecated since MLflow 2.9); never fails the caller."""
    transition = getattr(client, "transition_model_version_stage", None)
    if transition is None:
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            transition(name, version, stage, archive_existing_versions=False)
    except MlflowException as err:  # e.g. registries without stages (Unity Catalog)
        log.warning("could not mirror stage %s on %s v%s: %s", stage, name, version, err)


def register(cfg: PipelineConfig, model_uri: str, run_id: str, tags: dict[str, Any] | None = None) -> str:
    """Register ``model_uri`` (from run ``run_id``) as a new version; returns the version number.

    Creates the registered model (with a description) on first use. A retry for the same run and model
    returns the version already registered instead of adding another one.
    """
    client = _client()
    name = cfg.registered_model_name
    if _registered_model(client, name) is None:
        try:
            client.create_registered_model(
                name,
                tags={"airloop.pipeline": cfg.name, "airloop.task": cfg.task},
                description=(
                    f"Airloop pipeline {cfg.name!r} ({cfg.task}, target {cfg.target!r}). "
                    f"{cfg.description} Alias 'champion' serves; 'challenger' is the latest blessed version."
                ),
            )
        except MlflowException:
            if _registered_model(client, name) is None:  # not a concurrent creation: a real error
                raise
    for mv in client.search_model_versions(f"name='{name}' and run_id='{run_id}'"):
        if mv.source == model_uri:
            return str(mv.version)
    # mlflow.register_model (not client.create_model_version) also links the LoggedModel to the version.
    mv = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in (tags or {}).items()})
    if mv.run_id != run_id:
        log.warning("%s v%s: registered from run %s, expected run %s", name, mv.version, mv.run_id, run_id)
    return str(mv.version)


def set_challenger(cfg: PipelineConfig, version: str) -> None:
    """Point alias ``challenger`` at ``version`` (and mirror the legacy stage "Staging")."""
    client = _client()
    client.set_registered_model_alias(cfg.registered_model_name, CHALLENGER, str(version))
    _mirror_stage(client, cfg.registered_model_name, str(version), "Staging")


def promote(cfg: PipelineConfig, version: str, *, reason: str, actor: str) -> dict[str, Any]:
    """Make ``version`` the champion: move alias ``champion``, archive the previous champion, drop the
    ``challenger`` alias if it pointed here, and record who, when and why as version tags.

    Returns {"version", "previous" (version or None), "reason", "actor", "at" (ISO UTC)}.
    """
    client = _client()
    name = cfg.registered_model_name
    version = str(version)
    try:
        client.get_model_version(name, version)
    except MlflowException as err:
        if _missing(err) or "not found" in str(err).lower():
            raise BadInput(f"model {name!r}: no version {version!r} to promote") from None
        raise
    previous_mv = get_version(cfg, CHAMPION)
    previous = str(previous_mv.version) if previous_mv is not None else None
    if previous == version:
        previous = None  # promoting the champion again (a retry): nothing to archive
    at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    client.set_registered_model_alias(name, CHAMPION, version)
    _mirror_stage(client, name, version, "Production")
    if previous is not None:
        _mirror_stage(client, name, previous, "Archived")
        client.set_model_version_tag(name, previous, "airloop.replaced_by", version)
        client.set_model_version_tag(name, previous, "airloop.retired_at", at)
    challenger = get_version(cfg, CHALLENGER)
    if challenger is not None and str(challenger.version) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    for key, value in {
        "airloop.promoted_at": at,
        "airloop.promoted_by": actor,
        "airloop.promotion_reason": reason,
        "airloop.previous_champion": previous or "none",
    }.items():
        client.set_model_version_tag(name, version, key, value)
    log.info("%s v%s is champion (previous: %s), by %s: %s", name, version, previous, actor, reason)
    return {"version": version, "previous": previous, "reason": reason, "actor": actor, "at": at}


def load_model(cfg: PipelineConfig, alias: str = CHAMPION, *, flavor: str = "sklearn") -> tuple[Any, str]:
    """(model, version) of the version holding ``alias``, loaded as ``flavor`` ("sklearn" or "pyfunc").

    The version is resolved once and loaded by number, so a concurrent alias move cannot mix versions.
    Raises NothingToDo when no version holds the alias.
    """
    mv = get_version(cfg, alias)
    if mv is None:
        raise NothingToDo(f"model {cfg.registered_model_name!r}: no version has the alias {alias!r} yet")
    uri = f"models:/{cfg.registered_model_name}/{mv.version}"
    loader = mlflow.sklearn.load_model if flavor == "sklearn" else mlflow.pyfunc.load_model
    return loader(uri), str(mv.version)
