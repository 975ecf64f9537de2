"""``make demo``: the whole loop on simulated churn data, driven through Airflow, with a readable summary."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

from airloop.config import PipelineConfig
from airloop.demo.simulate import SimulationSpec, simulate
from airloop.orchestration import lifecycle
from airloop.orchestration.runner import Runner
from airloop.settings import airloop_home


def run_demo(cfg: PipelineConfig, runner: Runner, spec: SimulationSpec | None = None) -> dict:
    """Simulate the data, then day 0 (train → promote) and each later day; returns the facts for the summary."""
    spec = spec or SimulationSpec()
    # The simulated days end yesterday, as under the scheduler (airloop.demo.scheduled).
    spec = dataclasses.replace(spec, start=dt.date.today() - dt.timedelta(days=spec.days))
    started = time.monotonic()
    written = simulate(airloop_home() / "demo" / cfg.name, spec)
    runner.say(f"Simulated {spec.days} days of {cfg.name} data; drift starts {written['drift_starts']}.")
    runner.say("Day 0: history -> ingest, validate, train, evaluate, promote")
    lifecycle.ingest_and_validate(runner, cfg, written["history_day"])
    first = lifecycle.build_model(runner, cfg, "train", written["history_day"])
    if not first.promoted:
        raise lifecycle.StageRefused(f"the first model was not promoted: {first.verdict.get('summary')}")
    verdicts, retrains = [], []
    for day in written["days"]:
        runner.say(f"Day {day}: ingest, validate, score, monitor")
        verdict, outcome = lifecycle.daily(runner, cfg, day)
        verdicts.append(verdict)
        if outcome:
            retrains.append(outcome)
    return facts(first, verdicts, retrains, written, started)


def facts(first, verdicts: list, retrains: list, written: dict, started: float, **extra) -> dict:
    """What :func:`summary` reads: the first model's outcome, the monitor verdicts, the retrains, the injected
    drift's first day and the seconds since ``started`` (time.monotonic)."""
    return {
        "first": first,
        "verdicts": verdicts,
        "retrains": retrains,
        "drift_starts": written["drift_starts"],
        "seconds": round(time.monotonic() - started, 1),
        **extra,
    }


def _num(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def summary(cfg: PipelineConfig, facts: dict) -> str:
    """What a person reads at the end of the demo."""
    first = facts["first"]
    lines = [
        "",
        "=" * 78,
        f"Airloop demo: pipeline {cfg.name}, {facts['seconds']} s",
        "=" * 78,
        f"Champion v{first.promoted['version']} promoted on day 0: {first.verdict.get('metric')} = "
        f"{first.verdict.get('challenger_metric'):.4f} on the frozen holdout.",
        f"  gate verdict: {first.verdict.get('verdict_uri')}; model card: {first.verdict.get('model_card_uri')} "
        f"(also the description of v{first.promoted['version']} in the MLflow UI)",
    ]
    confirmed = [v for v in facts["verdicts"] if v["confirmed"]]
    alerts = [v for v in facts["verdicts"] if v["status"] == "alert"]
    lines.append(
        f"Drift injected from {facts['drift_starts']}; first alert "
        f"{alerts[0]['batch_id'] if alerts else 'never'}, confirmed "
        f"{confirmed[0]['batch_id'] if confirmed else 'never'}."
    )
    if alerts:
        top = sorted(alerts[0]["psi"].items(), key=lambda kv: -kv[1])[:4]
        lines.append("  drifting features (PSI): " + ", ".join(f"{k} {v:.2f}" for k, v in top))
        lines.append(f"  report: {alerts[0]['report_uri']}")
    lines += estimate_lines(facts["verdicts"], facts["drift_starts"])
    for r in facts["retrains"]:
        if r.skipped:
            lines.append(f"Retrain on {r.batch_id}: not started ({r.skipped}).")
            continue
        v = r.verdict
        decision = f"PROMOTED to champion v{r.promoted['version']}" if r.promoted else "REJECTED; champion kept"
        lines.append(f"Retrain on {r.batch_id}: {decision}.")
        lines.append(
            f"  same recent holdout: challenger {v.get('metric')} = {_num(v.get('challenger_metric'))}, "
            f"champion = {_num(v.get('champion_metric'))}"
        )
        for reason in v.get("reasons", []):
            lines.append(f"  - {reason}")
        lines.append(f"  evidence: {v.get('verdict_uri')}, model card {v.get('model_card_uri')}")
    if not facts["retrains"]:
        lines.append("No retrain was triggered.")
    lines += [
        "",
        "Next: `airloop status`, `make ui` (Airflow UI, http://127.0.0.1:8080) and `make mlflow-ui` "
        "(MLflow UI, http://127.0.0.1:5000) on the same state.",
    ]
    return "\n".join(lines)


def estimate_lines(verdicts: list[dict], drift_starts: str) -> list[str]:
    """Each day's performance estimated before its labels, beside the realized value once they arrived
    (from the latest verdict's track: :func:`airloop.monitoring.performance.estimation_track`)."""
    track = next((v.get("estimates") for v in reversed(verdicts) if v.get("estimates")), None)
    if not track:
        return []
    metric = next((v["estimate"]["metric"] for v in verdicts if v.get("estimate")), "metric")
    lines = [f"Estimated {metric} before the labels arrived (CBPE), and realized once they did:"]
    for t in track:
        mark = " (drift)" if t["batch_id"] >= drift_starts else ""
        band = f" [{t['lower']:.3f}, {t['upper']:.3f}]" if t.get("lower") is not None else ""
        real = (
            f"realized {t['realized']:.4f} (error {t['error']:+.4f})" if t["realized"] is not None else "labels pending"
        )
        lines.append(f"  {t['batch_id']}{mark}: estimated {t['estimate']:.4f}{band}; {real}")
    last = verdicts[-1]
    if last.get("trigger_reason"):
        lines.append(f"  retrain trigger on {last['batch_id']}: {last['trigger_reason']}")
    return lines
