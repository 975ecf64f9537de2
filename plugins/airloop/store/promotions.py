"""The promotion protocol over the MLflow registry: challenger and champion aliases moved under one lock,
mirrored as the stages Staging, Production and Archived, every move written to the promotion log first (intent)
and last (outcome), undone when a step fails, and repaired on the next promotion after a crash; rejection
records and rollback. Versions themselves (register, resolve, load) live in :mod:`airloop.store.registry`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from airloop import settings
from airloop.config import PipelineConfig
from airloop.errors import BadInput, NothingToDo
from airloop.store import models, tracking
from airloop.store.registry import (
    CHALLENGER,
    CHAMPION,
    COMPARED_WITH_TAG,
    LOCK_TIMEOUT_S,
    _client,
    _mirror_stage,
    _missing,
    _registered_model,
    get_version,
)

log = logging.getLogger(__name__)


def set_challenger(cfg: PipelineConfig, version: str) -> None:
    """Point alias ``challenger`` at ``version`` (and mirror the legacy stage "Staging")."""
    client = _client()
    with promotion_lock(cfg):
        client.set_registered_model_alias(cfg.registered_model_name, CHALLENGER, str(version))
        reconcile_stages(cfg)


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
    """Every promotion, rollback, rejection and refusal of the pipeline's model, oldest first (the lake's
    ``promotions/`` zone), one entry per operation.

    A promotion writes an intent record before it moves the alias and a completion record after, both with
    the same ``op``; an entry shows the operation's last record, whose ``status`` is "completed", "failed",
    "refused", "abandoned" (the intent of a promotion killed before the alias moved) or "intent" (in flight,
    or killed: the next promotion repairs it). Records from before intents existed count as completed.
    """
    from airloop.store import lake

    records = [lake.read_json(uri) for uri in lake.list_uris(_log_uri(cfg)) if uri.endswith(".json")]
    records.sort(key=lambda r: (r.get("at", ""), r.get("seq", 0), r.get("status") != "intent"))
    merged: dict[str, dict[str, Any]] = {}
    for i, record in enumerate(records):
        record.setdefault("status", "completed")
        key = record.get("op") or f"legacy-{i}"
        first = merged.get(key)
        merged[key] = {**record, "at": first["at"]} if first else record  # keep the operation's start time
    return sorted(merged.values(), key=lambda r: (r.get("at", ""), r.get("seq", 0)))


def completed_promotions(cfg: PipelineConfig) -> list[dict[str, Any]]:
    """The :func:`promotion_log` entries that moved the champion (status "completed"), oldest first."""
    return [r for r in promotion_log(cfg) if r["status"] == "completed" and r["event"] in ("promotion", "rollback")]


def _write_log(cfg: PipelineConfig, record: dict[str, Any]) -> str:
    """One object per record (no read-modify-write, so concurrent writers cannot lose one)."""
    from airloop.store import lake

    stamp = record["at"].replace(":", "").replace("-", "").replace("+0000", "Z")
    status = record.get("status", "completed")
    uri = lake.join(_log_uri(cfg), f"{stamp}-v{record['version']}-{status}-{uuid.uuid4().hex[:8]}.json")
    return lake.write_json(uri, record)


class ChampionMoved(NothingToDo):
    """The champion is no longer the version the gate compared the challenger against: promoting would skip
    a comparison. Recorded in the promotion log (status "refused"); re-run the evaluation to compare again."""


def _version_tags(client: MlflowClient, name: str, version: str, previous: str | None, record: dict) -> None:
    at = record["at"]
    if previous is not None:
        client.set_model_version_tag(name, previous, "airloop.replaced_by", version)
        client.set_model_version_tag(name, previous, "airloop.retired_at", at)
    tags = {
        "airloop.promoted_at": at,
        "airloop.promoted_by": record["actor"],
        "airloop.promotion_reason": record["reason"],
        "airloop.promotion_kind": record["event"],
        "airloop.previous_champion": previous or "none",
        "airloop.promotion_op": record["op"],
    }
    if record.get("approval"):
        tags["airloop.approved_by"] = str(record["approval"].get("approved_by", ""))
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def repair_promotions(cfg: PipelineConfig) -> list[dict[str, Any]]:
    """Finish what a killed promotion left (call under :func:`promotion_lock`): an intent whose version holds
    the alias is completed (its tags set, ``repaired`` true); any other pending intent is marked "abandoned".
    Returns the records written."""
    client = _client()
    name = cfg.registered_model_name
    pending = [r for r in promotion_log(cfg) if r["status"] == "intent"]
    if not pending:
        return []
    holder = get_version(cfg, CHAMPION)
    champion = str(holder.version) if holder is not None else None
    written = []
    for intent in pending:
        done = {**intent, "at": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")}
        done["seq"], done["repaired"] = time.monotonic_ns(), True
        if intent is pending[-1] and champion == intent["version"]:
            _version_tags(client, name, intent["version"], intent.get("previous"), intent)
            done["status"] = "completed"
        else:
            done["status"] = "abandoned"
        done["log_uri"] = _write_log(cfg, done)
        log.warning("%s v%s: repaired an interrupted %s: %s", name, intent["version"], intent["event"], done["status"])
        written.append(done)
    return written


def _restore_alias(client: MlflowClient, name: str, previous: str | None) -> None:
    if previous is None:
        client.delete_registered_model_alias(name, CHAMPION)
    else:
        client.set_registered_model_alias(name, CHAMPION, previous)


def promote(
    cfg: PipelineConfig,
    version: str,
    *,
    reason: str,
    actor: str,
    kind: str = "promotion",
    approval: dict[str, Any] | None = None,
    check_gate: bool = False,
) -> dict[str, Any]:
    """Make ``version`` the champion, under :func:`promotion_lock`, in three steps: write an intent record,
    move alias ``champion`` (dropping ``challenger`` if it pointed here, tagging who, when and why), write the
    completion record. A failure after the alias moved puts the alias back and records the failure; a kill
    leaves an intent that the next promotion repairs (:func:`repair_promotions`). So the alias never holds a
    version without a record of the promotion that put it there.

    ``check_gate``: compare-and-set against the champion the gate compared ``version`` with (its
    ``airloop.gate.compared_with`` tag, :data:`COMPARED_WITH_TAG`); if another version holds the alias now,
    nothing moves and :class:`ChampionMoved` is raised with the refusal recorded. Off for rollbacks and a
    person's explicit choice.

    Returns the record: {"event" (``kind``), "status" ("completed"), "op", "pipeline", "model", "version",
    "previous" (version or None), "reason", "actor", "at" (ISO UTC), "approval", "run_id", "log_uri"}.
    """
    client = _client()
    name = cfg.registered_model_name
    version = str(version)
    with promotion_lock(cfg):
        repair_promotions(cfg)
        try:
            mv = client.get_model_version(name, version)
        except MlflowException as err:
            if _missing(err) or "not found" in str(err).lower():
                raise BadInput(f"model {name!r}: no version {version!r} to promote") from None
            raise
        models.verify_version(name, version)  # ModelRefused: never make an unblessed version the champion
        previous_mv = get_version(cfg, CHAMPION)
        current = str(previous_mv.version) if previous_mv is not None else None
        previous = None if current == version else current  # promoting the champion again: nothing to archive
        record = {
            "event": kind,
            "status": "intent",
            "op": uuid.uuid4().hex,
            "pipeline": cfg.name,
            "model": name,
            "version": version,
            "previous": previous,
            "reason": reason,
            "actor": actor,
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
            "seq": time.monotonic_ns(),
            "approval": approval,
            "run_id": mv.run_id,
        }
        compared = (mv.tags or {}).get(COMPARED_WITH_TAG) if check_gate else None
        if compared is not None and current != version:
            expected = None if compared in ("", "none") else str(compared)
            if expected != current:
                why = (
                    f"the gate compared v{version} with champion {'v' + expected if expected else '(none)'}, but "
                    f"the champion is now {'v' + current if current else '(none)'}: promoting would skip that "
                    f"comparison; re-run the evaluation of v{version}"
                )
                refused = {**record, "status": "refused", "event": "promotion_refused", "reason": why}
                refused["requested_reason"] = reason
                refused["log_uri"] = _write_log(cfg, refused)
                log.warning("%s v%s: promotion refused: %s", name, version, why)
                raise ChampionMoved(f"model {name!r}: {why}")
        intent_uri = _write_log(cfg, record)  # before anything moves: a lake that is down stops us here
        try:
            client.set_registered_model_alias(name, CHAMPION, version)
            challenger = get_version(cfg, CHALLENGER)
            if challenger is not None and str(challenger.version) == version:
                client.delete_registered_model_alias(name, CHALLENGER)
            _version_tags(client, name, version, previous, record)
            reconcile_stages(cfg)
            holder = get_version(cfg, CHAMPION)
            if holder is None or str(holder.version) != version:
                # Only a hand-made alias move can get here (airloop's own moves hold the lock): say so loudly.
                raise RuntimeError(
                    f"model {name!r}: alias 'champion' moved to {holder.version if holder else 'nothing'} while "
                    f"v{version} was being promoted (set by hand?); stages were reconciled to the alias"
                )
            done = {**record, "status": "completed", "seq": time.monotonic_ns(), "intent_uri": intent_uri}
            done["log_uri"] = _write_log(cfg, done)
        except BaseException as err:
            _undo(cfg, client, record, current, err)
            raise
    log.info("%s v%s is champion (previous: %s), %s by %s: %s", name, version, previous, kind, actor, reason)
    return done


def _undo(cfg: PipelineConfig, client: MlflowClient, record: dict, current: str | None, err: BaseException) -> None:
    """Put the alias back where it was before ``record``'s promotion and record the failure (best effort: if
    even that fails, the intent record stays and the next promotion repairs it)."""
    name = cfg.registered_model_name
    try:
        holder = get_version(cfg, CHAMPION)
        if holder is not None and str(holder.version) == record["version"] and current != record["version"]:
            _restore_alias(client, name, current)
        reconcile_stages(cfg)
        failed = {**record, "status": "failed", "seq": time.monotonic_ns(), "error": f"{type(err).__name__}: {err}"}
        failed["at"] = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
        _write_log(cfg, failed)
        log.error("%s v%s: promotion failed (%s); champion left at %s", name, record["version"], err, current)
    except Exception as undo_err:
        log.error(
            "%s v%s: promotion failed and could not be undone now (%s); the next promotion repairs it",
            name,
            record["version"],
            undo_err,
        )


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
        mine = [r for r in completed_promotions(cfg) if r["version"] == current and r["event"] == "promotion"]
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
