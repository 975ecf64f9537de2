"""Training plans: which data a (re)training uses, the guards that keep drift-triggered retraining sane, and
the bookkeeping around a training (its frozen split before, the retrain record after).

The first training uses every validated batch. A retraining uses the last ``window_days`` of batches plus
a seeded sample of older labeled rows (the reference), and runs only when the guards allow it:
a cooldown, a maximum number of retrains per window, and a stop after N retrains in a row that failed to
beat the champion. Retrains are recorded in ``retrain/log.json`` in the lake.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from airloop.config import PipelineConfig
from airloop.errors import NothingToDo
from airloop.store import lake as lk
from airloop.store.lake import BATCH_COLUMN, Lake

if TYPE_CHECKING:  # pandas and the datasets load on first use: `airloop status` reads the retrain log only
    import pandas as pd


class RetrainRefused(NothingToDo):
    """A guard refused the retraining; the message says which one and why."""


def _log_uri(lake: Lake) -> str:
    return lk.join(lake.zone("retrain"), "log.json")


def retrain_log(lake: Lake) -> list[dict]:
    """Every recorded retrain, oldest first."""
    return lk.read_json(_log_uri(lake)) if lk.exists(_log_uri(lake)) else []


def record_retrain(lake: Lake, entry: dict) -> None:
    """Append (or, for the same batch, replace) a retrain record."""
    log = [e for e in retrain_log(lake) if e.get("batch_id") != entry.get("batch_id")]
    lk.write_json(_log_uri(lake), [*log, entry])


def check_guards(cfg: PipelineConfig, batch_id: str, log: list[dict], outcomes: dict[str, str]) -> dict:
    """Decide whether a retrain may start on ``batch_id``.

    ``log`` is the retrain log; ``outcomes`` maps a training run id to "promoted" or "rejected" (runs still
    in flight are absent). Returns {"allowed": bool, "guard": name or None, "reason": str}.
    """
    rc = cfg.retrain
    day = dt.date.fromisoformat(batch_id)
    earlier = [e for e in log if e["batch_id"] < batch_id]
    if earlier:
        last = dt.date.fromisoformat(earlier[-1]["batch_id"])
        if (day - last).days < rc.cooldown_days:
            return {
                "allowed": False,
                "guard": "cooldown",
                "reason": f"last retrain on {last} is {(day - last).days} day(s) ago; cooldown is "
                f"{rc.cooldown_days} days",
            }
    recent = [e for e in earlier if (day - dt.date.fromisoformat(e["batch_id"])).days < rc.max_retrains_window_days]
    if len(recent) >= rc.max_retrains:
        return {
            "allowed": False,
            "guard": "max_retrains",
            "reason": f"{len(recent)} retrains in the last {rc.max_retrains_window_days} days; "
            f"the maximum is {rc.max_retrains}",
        }
    failed_in_row = 0
    for entry in reversed(earlier):
        if outcomes.get(entry.get("train_run_id", "")) != "rejected":
            break
        failed_in_row += 1
    if failed_in_row >= rc.max_failed_in_row:
        return {
            "allowed": False,
            "guard": "failed_in_row",
            "reason": f"the last {failed_in_row} retrains did not beat the champion; stopping until a "
            "person looks (trigger the retrain DAG with force=true to override)",
        }
    return {"allowed": True, "guard": None, "reason": "all guards passed"}


def initial_batches(lake: Lake, until_batch: str | None = None) -> list[str]:
    """Every validated batch up to and including ``until_batch``."""
    return [b for b in lake.batches("validated") if until_batch is None or b <= until_batch]


def window_batches(cfg: PipelineConfig, lake: Lake, batch_id: str) -> tuple[list[str], list[str]]:
    """(recent, older) validated batches for a retrain ending on ``batch_id``."""
    day = dt.date.fromisoformat(batch_id)
    start = (day - dt.timedelta(days=cfg.retrain.window_days - 1)).isoformat()
    batches = initial_batches(lake, batch_id)
    return [b for b in batches if b >= start], [b for b in batches if b < start]


def training_frame(cfg: PipelineConfig, lake: Lake, recent: list[str], older: list[str]) -> pd.DataFrame:
    """Labeled rows of the recent batches plus a seeded sample of older labeled rows, time-ordered."""
    import pandas as pd

    from airloop.data.datasets import labeled_frame

    frame = labeled_frame(cfg, lake, recent)
    if older and cfg.retrain.reference_rows:
        old = labeled_frame(cfg, lake, older)
        old = old.sample(n=min(len(old), cfg.retrain.reference_rows), random_state=cfg.training.seed)
        frame = pd.concat([old, frame], ignore_index=True)
    order = [c for c in (cfg.event_time_column, BATCH_COLUMN) if c and c in frame.columns]
    if order:
        frame = frame.sort_values(order[0], kind="stable").reset_index(drop=True)
    # Over the row budget, keep the most recent rows.
    return frame.tail(cfg.training.max_rows).reset_index(drop=True)


def gate_outcomes(run_ids: list[str]) -> dict[str, str]:
    """Map training run ids to "promoted" (the gate blessed them) or "rejected", from their MLflow tags."""
    from mlflow.tracking import MlflowClient

    client, out = MlflowClient(), {}
    for run_id in filter(None, run_ids):
        verdict = client.get_run(run_id).data.tags.get("airloop.gate.verdict")
        if verdict:
            out[run_id] = "promoted" if verdict == "blessed" else "rejected"
    return out


def wants_first_model(cfg: PipelineConfig) -> bool:
    """Whether a newly validated batch should start the first training: no champion yet. The validate DAG
    emits the ``first-model`` Asset event only then, so the train DAG is not started at all once a champion
    exists (later models come from drift; ``force`` on the train DAG trains anyway)."""
    from airloop.store import registry, tracking

    tracking.configure_mlflow()
    return registry.get_version(cfg, "champion") is None


def plan_initial(cfg: PipelineConfig, lake: Lake, batch_id: str | None, *, force: bool = False) -> dict:
    """The first training: every validated batch. Refused (RetrainRefused) once a champion exists,
    unless forced, because later training is drift-triggered. Returns {"kind","recent","older","reason"}."""
    from airloop.store import registry, tracking

    tracking.configure_mlflow()
    champion = registry.get_version(cfg, "champion")
    if champion is not None and not force:
        raise RetrainRefused(
            f"pipeline {cfg.name!r} already has champion v{champion.version}; later training "
            "is drift-triggered (trigger with force=true to train anyway)"
        )
    batches = initial_batches(lake, batch_id)
    if not batches:
        raise RetrainRefused(f"pipeline {cfg.name!r}: no validated batches to train on yet")
    return {
        "kind": "initial",
        "batch_id": batches[-1],
        "recent": batches,
        "older": [],
        "reason": "forced" if champion is not None else "no champion yet",
    }


def plan_retrain(cfg: PipelineConfig, lake: Lake, batch_id: str, *, force: bool = False) -> dict:
    """A drift-triggered retraining ending on ``batch_id``, if the guards allow it (else RetrainRefused).

    Records the retrain in the log; returns {"kind","batch_id","recent","older","reason"}."""
    from airloop.store import tracking

    tracking.configure_mlflow()
    log = retrain_log(lake)
    verdict = check_guards(cfg, batch_id, log, gate_outcomes([e.get("train_run_id") for e in log]))
    if not verdict["allowed"] and not force:
        raise RetrainRefused(
            f"retrain of {cfg.name!r} on {batch_id} refused by guard {verdict['guard']}: {verdict['reason']}"
        )
    recent, older = window_batches(cfg, lake, batch_id)
    record_retrain(
        lake, {"batch_id": batch_id, "at": dt.datetime.now(dt.UTC).isoformat(), "forced": force, "guards": verdict}
    )
    return {
        "kind": "retrain",
        "batch_id": batch_id,
        "recent": recent,
        "older": older,
        "reason": "forced" if force and not verdict["allowed"] else verdict["reason"],
    }


def prepare_training(cfg: PipelineConfig, lake: Lake, plan: dict) -> dict:
    """Assemble the plan's labeled frame and write its frozen train/test split under
    ``training/<fingerprint>/`` (one folder per data version). Returns train.prepare_split's dict + plan."""
    from airloop.data.datasets import fingerprint
    from airloop.model.train import prepare_split

    frame = training_frame(cfg, lake, plan["recent"], plan["older"])
    if plan["kind"] == "initial":
        _first_feasibility(cfg, frame)
    version = fingerprint(frame)[:16]
    split = prepare_split(cfg, frame, lk.join(lake.zone("training"), version))
    return {**split, "data_version": version, "plan": plan}


def prepare_initial(cfg: PipelineConfig, lake: Lake, batch_id: str | None, *, force: bool = False) -> dict:
    """The first training's plan (:func:`plan_initial`) and its frozen split (:func:`prepare_training`): the
    train DAG's first task. One task, not two: each task boundary under the scheduler costs about half a
    second, and the plan is a few registry and lake reads."""
    return prepare_training(cfg, lake, plan_initial(cfg, lake, batch_id, force=force))


def prepare_retrain(cfg: PipelineConfig, lake: Lake, batch_id: str, *, force: bool = False) -> dict:
    """A drift-triggered retraining's guarded plan (:func:`plan_retrain`) and its frozen split: the retrain
    DAG's first task (skipped, with the guard's reason, when a guard refuses)."""
    return prepare_training(cfg, lake, plan_retrain(cfg, lake, batch_id, force=force))


def _first_feasibility(cfg: PipelineConfig, frame: pd.DataFrame) -> None:
    """Before a pipeline's first training, write its feasibility report once (the gate reads it)."""
    import logging

    from airloop.model import feasibility

    if feasibility.latest(cfg) is not None:
        return
    try:
        report = feasibility.run_feasibility(cfg, frame)
    except Exception as err:  # the report informs the first promotion; training goes on without it
        logging.getLogger(__name__).warning("feasibility report not written for %s: %s", cfg.name, err)
        return
    logging.getLogger(__name__).info("feasibility: %s (%s)", report["sentence"], report["html_uri"])


def finish_retrain(lake: Lake, batch_id: str, train_run_id: str) -> None:
    """Attach the selected training run to the retrain record, so the guards can see its gate outcome."""
    for entry in retrain_log(lake):
        if entry["batch_id"] == batch_id:
            record_retrain(lake, {**entry, "train_run_id": train_run_id})


def finish_training(cfg: PipelineConfig, lake: Lake, split: dict, results: list[dict]) -> dict:
    """Select the best of the candidates' ``results`` (:func:`airloop.model.train.select_best`) and, when
    the ``split`` (from :func:`prepare_training`) belongs to a retrain, attach the selected run to its retrain
    record. Returns select_best's dict."""
    from airloop.model.train import select_best

    best = select_best(cfg, list(results))
    if split["plan"]["kind"] == "retrain":
        finish_retrain(lake, split["plan"]["batch_id"], best["run_id"])
    return best
