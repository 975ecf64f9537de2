"""The lifecycle, run through Airflow on the embedded default: what ``airloop run`` and ``airloop demo`` do.

Each step is one DAG run (see :mod:`airloop.orchestration.runner`), in the order the Assets chain them in a scheduler:
ingest → validate → train → evaluate → promote, and per day ingest → validate → score → monitor
(→ retrain → evaluate → promote when the monitor confirms drift).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from airloop.config import PipelineConfig
from airloop.errors import AirloopError
from airloop.orchestration.runner import Runner, RunResult


class StageRefused(AirloopError):
    """A stage refused (bad data, a failed gate...); the message is the short reason."""


@dataclass
class Outcome:
    """What happened to one model-building attempt (train or retrain)."""

    kind: str
    batch_id: str
    trained_run: str | None = None
    verdict: dict = field(default_factory=dict)
    promoted: dict | None = None
    skipped: str | None = None
    awaiting_approval: str | None = None  # the blessed version, when promotion needs a person


def dag_id(cfg: PipelineConfig, stage: str) -> str:
    return cfg.dag_id(stage)


def _mark(result: RunResult) -> str:
    return "ok" if result.ok else "FAILED"


def step(runner: Runner, cfg: PipelineConfig, stage: str, conf: dict, label: str = "") -> RunResult:
    """Run one stage DAG and print one progress line."""
    subject = conf.get("batch_id") or conf.get("version") or conf.get("train_run_id") or ""
    result = runner.run(dag_id(cfg, stage), conf=conf, note=f"{stage} {subject} (airloop {runner.command})".strip())
    skipped = [t for t, s in result.tasks.items() if s == "skipped"]
    note = f" (skipped: {', '.join(skipped)})" if skipped and result.ok else ""
    if result.skips:
        note = f" (skipped: {next(iter(result.skips.values()))})"
    runner.say(f"  {_mark(result):6} {cfg.name:10} {stage:9} {label:24} {result.seconds:6.1f} s{note}")
    return result


def ingest_and_validate(runner: Runner, cfg: PipelineConfig, batch_id: str, history: bool = False) -> None:
    """Ingest and validate one batch (with ``history``: every row up to its day's end); raises StageRefused
    with the reason when either refuses."""
    for stage in ("ingest", "validate"):
        conf = {"batch_id": batch_id, **({"history": True} if history and stage == "ingest" else {})}
        result = step(runner, cfg, stage, conf, batch_id + (" (history)" if history and stage == "ingest" else ""))
        if not result.ok:
            raise StageRefused(f"{stage} of batch {batch_id} refused: {result.reason()}")


def build_model(runner: Runner, cfg: PipelineConfig, kind: str, batch_id: str, force: bool = False) -> Outcome:
    """train or retrain → evaluate → promote. A gate rejection is an outcome, not an error."""
    outcome = Outcome(kind=kind, batch_id=batch_id)
    trained = step(runner, cfg, kind, {"batch_id": batch_id, "force": force}, batch_id)
    if not trained.ok:
        raise StageRefused(f"{kind} on {batch_id} failed: {trained.reason()}")
    if not trained.task_ok("select_best"):
        outcome.skipped = "; ".join(trained.skips.values()) or "the plan was skipped (see the log)"
        return outcome
    best = trained.returns["select_best"]
    outcome.trained_run = best["run_id"]
    evaluated = step(runner, cfg, "evaluate", {"train_run_id": best["run_id"]}, best.get("candidate", ""))
    if not evaluated.task_ok("evaluate"):
        raise StageRefused(f"evaluate of run {best['run_id']} failed: {evaluated.reason()}")
    outcome.verdict = evaluated.returns["evaluate"]
    if evaluated.task_ok("publish_challenger"):
        version = evaluated.returns["publish_challenger"]
        if cfg.promotion.approval == "required":
            # A person decides in Airflow (Required Actions); this unattended driver must not wait for them.
            outcome.awaiting_approval = str(version)
            runner.say(
                f"         v{version} is challenger; promotion needs approval: trigger "
                f"{dag_id(cfg, 'promote')} with version={version} and answer it in Airflow's Required Actions"
            )
            return outcome
        promoted = step(runner, cfg, "promote", {"version": str(version)}, f"v{version}")
        if not promoted.ok:
            raise StageRefused(f"promote of v{version} failed: {promoted.reason()}")
        outcome.promoted = promoted.returns["promote"]
    return outcome


def pending_batches(cfg: PipelineConfig) -> tuple[list[str], bool]:
    """(batches to ingest, history). Dated source files: the dates not validated yet. Undated files with an
    event-time column: the day of the latest event, as one initial *history* batch (every row up to that
    day) while nothing is validated, as that day's batch afterwards. Otherwise today's date."""
    from airloop.data.intervals import files_for_batch, latest_event_day, list_source_files
    from airloop.store.lake import DATE_IN_TEXT, Lake

    files = list_source_files(cfg.source.uri)
    if not files:
        raise StageRefused(f"pipeline {cfg.name!r}: no files match source.uri {cfg.source.uri}")
    done = set(Lake(cfg.name).batches("validated"))
    dates = sorted({m.group(1) for f in files if (m := DATE_IN_TEXT.search(f))})
    if not dates or not files_for_batch(files, dates[0])[1]:
        latest = latest_event_day(cfg)
        if latest:
            return [latest], not done
        return [dt.date.today().isoformat()], False
    return [d for d in dates if d not in done] or dates[-1:], False


def run_pipeline(runner: Runner, cfg: PipelineConfig, batches: list[str] | None = None) -> Outcome:
    """``airloop run NAME``: ingest and validate the pending batches, then train → evaluate → promote."""
    history = False
    if not batches:
        batches, history = pending_batches(cfg)
    for batch in batches:
        ingest_and_validate(runner, cfg, batch, history=history)
    # A person asked for the lifecycle, so train even if a champion exists: the gate protects it.
    return build_model(runner, cfg, "train", batches[-1], force=True)


def daily(runner: Runner, cfg: PipelineConfig, batch_id: str) -> tuple[dict, Outcome | None]:
    """One production day: ingest → validate → score → monitor (→ retrain path on confirmed drift)."""
    ingest_and_validate(runner, cfg, batch_id)
    scored = step(runner, cfg, "score", {"batch_id": batch_id}, batch_id)
    if not scored.ok:
        raise StageRefused(f"score of {batch_id} failed: {scored.reason()}")
    monitored = step(runner, cfg, "monitor", {"batch_id": batch_id}, batch_id)
    if not monitored.task_ok("monitor"):
        raise StageRefused(f"monitor of {batch_id} failed: {monitored.reason()}")
    verdict = monitored.returns["monitor"]
    runner.say(
        f"         drift {verdict['status']:5} confirmed={verdict['confirmed']!s:5} "
        f"features: {', '.join(verdict['drifted_features'][:4]) or '-'}"
    )
    outcome = None
    if monitored.task_ok("alert_confirmed_drift"):
        outcome = build_model(runner, cfg, "retrain", batch_id)
    return verdict, outcome
