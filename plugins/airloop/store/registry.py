"""The MLflow model registry, driven by aliases: ``challenger`` (blessed by the gate) and ``champion``
(serving). The legacy stages (Staging, Production, Archived) are mirrored for older tooling while this MLflow
still has them; aliases are the source of truth.

One registered model per pipeline, named ``cfg.registered_model_name`` (``airloop-<pipeline>``).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

from airloop.config import PipelineConfig
from airloop.errors import BadInput, NothingToDo
from airloop.store import models, tracking

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"
LOCK_TIMEOUT_S = 120.0
COMPARED_WITH_TAG = "airloop.gate.compared_with"  # set by the gate: the champion version it judged against


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


def alias_versions(cfg: PipelineConfig) -> dict[str, str]:
    """{alias: version number} of the pipeline's registered model in one registry read ({} before its first
    version): what a poller needs to see whether an alias moved. Read from the registered model rather than
    get_model_version_by_alias: stores disagree on the error code of an unknown alias (SQL stores say
    INVALID_PARAMETER_VALUE)."""
    model = _registered_model(_client(), cfg.registered_model_name)
    return {a: str(v) for a, v in ((model.aliases or {}) if model is not None else {}).items()}


def get_version(cfg: PipelineConfig, alias: str) -> ModelVersion | None:
    """The model version holding ``alias``; None when the registered model or the alias does not exist."""
    version = alias_versions(cfg).get(alias)
    if version is None:
        return None
    return _client().get_model_version(cfg.registered_model_name, version)


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
    """Register ``model_uri`` (from run ``run_id``) as a new version and bless it (sign it with the
    model-signing key, :func:`airloop.store.models.bless`); returns the version number. The gate is the one
    caller: a version registered any other way is never loaded.

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
            if models.BLESSING_TAG not in (mv.tags or {}):  # a retry after a crash between the two steps
                models.bless(name, str(mv.version), mv.run_id or run_id, model_uri)
            return str(mv.version)
    # mlflow.register_model (not client.create_model_version) also links the LoggedModel to the version.
    mv = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in (tags or {}).items()})
    if mv.run_id != run_id:
        log.warning("%s v%s: registered from run %s, expected run %s", name, mv.version, mv.run_id, run_id)
    models.bless(name, str(mv.version), mv.run_id or run_id, model_uri)
    return str(mv.version)


def promotion_evidence(cfg: PipelineConfig, version: str) -> dict[str, Any]:
    """What an approver sees: {"version", "subject", "body" (Markdown: metrics, gate verdict, links)}."""
    from airloop.model import modelcard
    from airloop.model.gate import describe_interval

    client = _client()
    name = cfg.registered_model_name
    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException:
        raise BadInput(f"model {name!r}: no version {version!r} to approve") from None
    verdict: dict[str, Any] = {}
    verdict_uri = (mv.tags or {}).get("airloop.gate.verdict_uri") or f"runs:/{mv.run_id}/gate/verdict.json"
    try:
        verdict = mlflow.artifacts.load_dict(verdict_uri)
    except Exception as err:  # an old version without a verdict artifact: show what there is
        log.warning("no gate verdict for %s v%s: %s", name, version, err)
    champion = get_version(cfg, CHAMPION)
    metric = verdict.get("metric", cfg.primary_metric)
    lines = [
        f"**{name} v{version}** would replace champion {'v' + str(champion.version) if champion else '(none yet)'}.",
        "",
        f"- {metric}: challenger {modelcard.fmt(verdict.get('challenger_metric'))}, champion "
        f"{modelcard.fmt(verdict.get('champion_metric'))}"
        + (
            f", improvement: {describe_interval(verdict.get('lower_bound'), verdict['interval_90'])}"
            if verdict.get("interval_90")
            else ""
        ),
        "- holdout metrics: "
        + (", ".join(f"{k} {v:.4f}" for k, v in sorted(verdict.get("metrics", {}).items())) or "-"),
        "",
        f"**Gate verdict: {'BLESSED' if verdict.get('blessed') else 'unknown or rejected'}**",
        "",
        *[f"- {r}" for r in verdict.get("reasons", [])],
        "",
        f"Run: {verdict.get('run_url') or tracking.run_url(mv.run_id)}  ",
        f"Model card: `{(mv.tags or {}).get('airloop.model_card', 'none')}`  ",
        f"Verdict: `{verdict_uri}`",
    ]
    return {
        "version": str(version),
        "subject": f"Promote {name} v{version} to champion?",
        "body": "\n".join(lines),
    }


def load_model(cfg: PipelineConfig, alias: str = CHAMPION, *, flavor: str = "sklearn") -> tuple[Any, str]:
    """(model, version) of the version holding ``alias``, loaded as ``flavor`` ("sklearn" or "pyfunc").

    The version is resolved once and loaded by number, so a concurrent alias move cannot mix versions.
    Raises NothingToDo when no version holds the alias.
    """
    mv = get_version(cfg, alias)
    if mv is None:
        raise NothingToDo(f"model {cfg.registered_model_name!r}: no version has the alias {alias!r} yet")
    if flavor == "sklearn":
        return models.load_version(cfg, mv.version), str(mv.version)
    return models.load_pyfunc(models.version_uri(cfg, mv.version)), str(mv.version)
