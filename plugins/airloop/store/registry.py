"""The MLflow model registry, driven by aliases: ``challenger`` (blessed by the gate) and ``champion``
(serving). The legacy stages (Staging, Production, Archived) are mirrored for older tooling while this MLflow
still has them; aliases are the source of truth.

One registered model per pipeline, named ``cfg.registered_model_name`` (``airloop-<pipeline>``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import logging
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

from airloop import settings
from airloop.config import PipelineConfig
from airloop.errors import BadInput, NothingToDo
from airloop.store import models, tracking

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"
LOCK_TIMEOUT_S = 120.0


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
    with promotion_lock(cfg):
        client.set_registered_model_alias(cfg.registered_model_name, CHALLENGER, str(version))
        reconcile_stages(cfg)


# ------------------------------------------------------------------------------------------ promotion


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def _file_lock(path: Path, timeout_s: float) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path}: another promotion held the lock for over {timeout_s:g} s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def promotion_lock(cfg: PipelineConfig, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[str]:
    """Serialize alias moves of one registered model; yields the kind of lock taken.

    The lock lives where the registry lives: a PostgreSQL advisory lock on a PostgreSQL MLflow store (any
    worker, any host), a file lock beside a SQLite store (one machine, as SQLite itself). Other stores (an
    MLflow server over HTTP) get a file lock under AIRLOOP_HOME, which serializes one host only; there the
    stage reconciliation after each move still converges (see docs/models.md).
    """
    uri = tracking.configure_mlflow()
    name = cfg.registered_model_name
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        with _file_lock(db.with_name(f".{db.name}.{name}.promotion.lock"), timeout_s):
            yield "sqlite-file"
        return
    if uri.startswith(("postgresql://", "postgresql+")):
        import sqlalchemy as sa

        engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(f"SET lock_timeout = '{int(timeout_s * 1000)}ms'"))
                conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _lock_key(name)})
                conn.commit()
                try:
                    yield "postgres-advisory"
                finally:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _lock_key(name)})
                    conn.commit()
        finally:
            engine.dispose()
        return
    with _file_lock(settings.airloop_home() / "locks" / f"{name}.promotion.lock", timeout_s):
        yield "local-file"


def reconcile_stages(cfg: PipelineConfig) -> dict[str, str]:
    """Make the legacy stages agree with the aliases: the champion is Production, any other Production
    version Archived, the challenger (if not the champion) Staging. Returns {version: stage} of the changes.
    Idempotent; run after every alias move, so two interleaved writers converge on the final alias."""
    client = _client()
    name = cfg.registered_model_name
    model = _registered_model(client, name)
    if model is None:
        return {}
    aliases = {k: str(v) for k, v in (model.aliases or {}).items()}
    champion, challenger = aliases.get(CHAMPION), aliases.get(CHALLENGER)
    changed: dict[str, str] = {}
    for mv in client.search_model_versions(f"name='{name}'"):
        version, stage = str(mv.version), mv.current_stage
        wanted = None
        if version == champion:
            wanted = "Production"
        elif version == challenger:
            wanted = "Staging"
        elif stage == "Production":
            wanted = "Archived"
        if wanted and wanted != stage:
            _mirror_stage(client, name, version, wanted)
            changed[version] = wanted
    return changed


def _log_uri(cfg: PipelineConfig) -> str:
    from airloop.store.lake import Lake

    return Lake(cfg.name).zone("promotions")


def promotion_log(cfg: PipelineConfig) -> list[dict[str, Any]]:
    """Every promotion and rollback of the pipeline's model, oldest first (the lake's ``promotions/`` zone)."""
    from airloop.store import lake

    records = [lake.read_json(uri) for uri in lake.list_uris(_log_uri(cfg)) if uri.endswith(".json")]
    return sorted(records, key=lambda r: (r.get("at", ""), r.get("seq", 0)))


def _write_log(cfg: PipelineConfig, record: dict[str, Any]) -> str:
    """One object per record (no read-modify-write, so concurrent writers cannot lose one)."""
    from airloop.store import lake

    stamp = record["at"].replace(":", "").replace("-", "").replace("+0000", "Z")
    uri = lake.join(_log_uri(cfg), f"{stamp}-v{record['version']}-{uuid.uuid4().hex[:8]}.json")
    return lake.write_json(uri, record)


def promote(
    cfg: PipelineConfig,
    version: str,
    *,
    reason: str,
    actor: str,
    kind: str = "promotion",
    approval: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Make ``version`` the champion, under :func:`promotion_lock`: move alias ``champion``, drop the
    ``challenger`` alias if it pointed here, record who, when and why (version tags and one promotion-log
    record), then reconcile the mirrored stages and re-check the alias.

    Returns the record: {"event" (``kind``), "pipeline", "model", "version", "previous" (version or None),
    "reason", "actor", "at" (ISO UTC), "approval", "run_id", "log_uri"}.
    """
    client = _client()
    name = cfg.registered_model_name
    version = str(version)
    with promotion_lock(cfg):
        try:
            mv = client.get_model_version(name, version)
        except MlflowException as err:
            if _missing(err) or "not found" in str(err).lower():
                raise BadInput(f"model {name!r}: no version {version!r} to promote") from None
            raise
        previous_mv = get_version(cfg, CHAMPION)
        previous = str(previous_mv.version) if previous_mv is not None else None
        if previous == version:
            previous = None  # promoting the champion again (a retry): nothing to archive
        now = dt.datetime.now(dt.UTC)
        at = now.isoformat(timespec="microseconds")
        client.set_registered_model_alias(name, CHAMPION, version)
        challenger = get_version(cfg, CHALLENGER)
        if challenger is not None and str(challenger.version) == version:
            client.delete_registered_model_alias(name, CHALLENGER)
        if previous is not None:
            client.set_model_version_tag(name, previous, "airloop.replaced_by", version)
            client.set_model_version_tag(name, previous, "airloop.retired_at", at)
        tags = {
            "airloop.promoted_at": at,
            "airloop.promoted_by": actor,
            "airloop.promotion_reason": reason,
            "airloop.promotion_kind": kind,
            "airloop.previous_champion": previous or "none",
        }
        if approval:
            tags["airloop.approved_by"] = str(approval.get("approved_by", ""))
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        reconcile_stages(cfg)
        holder = get_version(cfg, CHAMPION)
        if holder is None or str(holder.version) != version:
            # Only a hand-made alias move can get here (airloop's own moves hold the lock): say so loudly.
            raise RuntimeError(
                f"model {name!r}: alias 'champion' moved to {holder.version if holder else 'nothing'} while "
                f"v{version} was being promoted (set by hand?); stages were reconciled to the alias"
            )
        record = {
            "event": kind,
            "pipeline": cfg.name,
            "model": name,
            "version": version,
            "previous": previous,
            "reason": reason,
            "actor": actor,
            "at": at,
            "seq": time.monotonic_ns(),
            "approval": approval,
            "run_id": mv.run_id,
        }
        record["log_uri"] = _write_log(cfg, record)
    log.info("%s v%s is champion (previous: %s), %s by %s: %s", name, version, previous, kind, actor, reason)
    return record


def record_rejection(cfg: PipelineConfig, version: str, decision: dict[str, Any]) -> dict[str, Any]:
    """Record that a person rejected promoting ``version`` (version tags and a promotion-log record with
    event "approval_rejected"); the champion does not move. Returns the record."""
    client = _client()
    name = cfg.registered_model_name
    champion = get_version(cfg, CHAMPION)
    at = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
    who = decision.get("approved_by", "unknown")
    client.set_model_version_tag(name, str(version), "airloop.approval", f"rejected by {who} at {at}")
    record = {
        "event": "approval_rejected",
        "pipeline": cfg.name,
        "model": name,
        "version": str(version),
        "previous": str(champion.version) if champion is not None else None,
        "reason": "rejected by the approver in Airflow",
        "actor": who,
        "at": at,
        "seq": time.monotonic_ns(),
        "approval": decision,
    }
    record["log_uri"] = _write_log(cfg, record)
    log.info("%s v%s: promotion rejected by %s; champion unchanged", name, version, who)
    return record


def rollback(cfg: PipelineConfig, to: str | None = None, *, reason: str, actor: str) -> dict[str, Any]:
    """Restore an earlier champion: ``to``, else the champion that the current one replaced when it was
    promoted (from the promotion log). ``reason`` is required. Returns the promotion record (event
    "rollback")."""
    if not reason or not reason.strip():
        raise BadInput("rollback: a reason is required (it is recorded with the rollback)")
    name = cfg.registered_model_name
    current_mv = get_version(cfg, CHAMPION)
    current = str(current_mv.version) if current_mv is not None else None
    if to is None:
        # The champion before the current one's last *promotion* (not a rollback record: rolling back twice
        # goes further back, instead of restoring the version the first rollback removed).
        mine = [r for r in promotion_log(cfg) if r["version"] == current and r["event"] == "promotion"]
        if current is None:
            raise NothingToDo(f"model {name!r}: no champion to roll back from")
        if not mine:
            raise BadInput(
                f"model {name!r}: champion v{current} has no promotion record (set by hand in the MLflow UI?); "
                f"name the version to restore with --to VERSION"
            )
        to = mine[-1].get("previous")
        if not to:
            raise BadInput(
                f"model {name!r}: the promotion log records no previous champion before v{current}; "
                f"name the version to restore with --to VERSION"
            )
    to = str(to)
    if to == current:
        raise BadInput(f"model {name!r}: v{to} is already the champion; nothing to roll back")
    return promote(cfg, to, reason=reason.strip(), actor=actor, kind="rollback")


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
    return mlflow.pyfunc.load_model(models.version_uri(cfg, mv.version)), str(mv.version)
