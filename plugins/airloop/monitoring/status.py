"""``airloop status``: per pipeline, the champion and its metrics, the last run of each DAG, the last drift
verdict. The JSON form is stable (``schema_version``) and documented in docs/status.md.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

from airloop.config import PipelineConfig
from airloop.store.lake import Lake

SCHEMA_VERSION = 1
STALENESS_KEYS = ("days_monitored", "live_metric", "live", "trend", "trend_per_day", "stale_on", "days_to_stale")
STAGES = ("ingest", "validate", "train", "evaluate", "promote", "score", "monitor", "retrain")


def _sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL when it exists (the embedded default), else None."""
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    return path if path.exists() else None


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def _utc_iso(value: str | None) -> str | None:
    """A timestamp column of SQLite (naive UTC text) as the ISO text the ORM path gives."""
    if not value:
        return None
    return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC).isoformat()


def _version_facts(days_since: str | None, version: str, run_id: str, tags: dict, run_tags: dict, metrics: dict):
    promoted_at = tags.get("airloop.promoted_at")
    days = None
    if promoted_at:
        days = round((dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(promoted_at)).total_seconds() / 86400, 2)
    return {
        "version": str(version),
        "run_id": run_id,
        "candidate": run_tags.get("airloop.candidate"),
        "metrics": {k: round(v, 5) for k, v in sorted(metrics.items())},
        "promoted_at": promoted_at,
        "promoted_by": tags.get("airloop.promoted_by"),
        "days_in_production": days,
    }


def _version_info_sqlite(db: Path, cfg: PipelineConfig, alias: str) -> dict | None:
    """:func:`_version_info` read straight from MLflow's SQLite store: the same facts, without importing
    MLflow (seconds) or opening its store (more seconds, as it checks its schema)."""
    name = cfg.registered_model_name
    with _read_only(db) as con:
        row = con.execute(
            "select a.version, v.run_id from registered_model_aliases a join model_versions v "
            "on v.name = a.name and v.version = a.version where a.name = ? and a.alias = ?",
            (name, alias),
        ).fetchone()
        if row is None:
            return None
        version, run_id = row
        tags = dict(
            con.execute("select key, value from model_version_tags where name = ? and version = ?", (name, version))
        )
        run_tags = dict(con.execute("select key, value from tags where run_uuid = ?", (run_id,)))
        metrics = {
            k: (float("nan") if is_nan else float(v))
            for k, v, is_nan in con.execute(
                "select key, value, is_nan from latest_metrics where run_uuid = ?", (run_id,)
            )
        }
    return _version_facts(None, version, run_id, tags, run_tags, metrics)


def _version_info(cfg: PipelineConfig, alias: str) -> dict | None:
    from airloop import settings

    db = _sqlite_path(settings.mlflow_tracking_uri())
    if db is not None:
        return _version_info_sqlite(db, cfg, alias)
    from mlflow.tracking import MlflowClient

    from airloop.store import registry

    mv = registry.get_version(cfg, alias)
    if mv is None:
        return None
    run = MlflowClient().get_run(mv.run_id)
    return _version_facts(None, mv.version, mv.run_id, mv.tags, run.data.tags, run.data.metrics)


def _dag_runs(cfg: PipelineConfig) -> dict:
    """The last run of each stage DAG from Airflow's metadata DB (None where it never ran)."""
    import os

    db = _sqlite_path(os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", ""))
    if db is not None:  # the embedded default: read the file, without importing Airflow (seconds)
        out: dict[str, dict | None] = {}
        with _read_only(db) as con:
            for stage in STAGES:
                dag_id = cfg.dag_id(stage)
                row = con.execute(
                    "select run_id, state, start_date, end_date from dag_run where dag_id = ? order by id desc limit 1",
                    (dag_id,),
                ).fetchone()
                out[stage] = (
                    None
                    if row is None
                    else {
                        "dag_id": dag_id,
                        "run_id": row[0],
                        "state": str(row[1]).split(".")[-1].lower(),
                        "start": _utc_iso(row[2]),
                        "end": _utc_iso(row[3]),
                    }
                )
        return out
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    out: dict[str, dict | None] = {}
    with create_session() as session:
        for stage in STAGES:
            dag_id = cfg.dag_id(stage)
            run = session.scalars(
                select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).limit(1)
            ).first()
            out[stage] = (
                None
                if run is None
                else {
                    "dag_id": dag_id,
                    "run_id": run.run_id,
                    "state": str(run.state).split(".")[-1].lower(),
                    "start": run.start_date.isoformat() if run.start_date else None,
                    "end": run.end_date.isoformat() if run.end_date else None,
                }
            )
    return out


def pipeline_status(cfg: PipelineConfig) -> dict:
    from airloop.model.plan import retrain_log
    from airloop.monitoring import monitor

    lake = Lake(cfg.name)
    verdict = monitor.last_verdict(lake)
    champion = _version_info(cfg, "champion")
    history = monitor.champion_history(cfg, lake)
    if champion is not None:
        mine = next((h for h in history if h["model_version"] == champion["version"]), None)
        champion["staleness"] = None if mine is None else {k: mine[k] for k in STALENESS_KEYS}
    return {
        "registered_model": cfg.registered_model_name,
        "experiment": cfg.experiment_name,
        "source_file": cfg.source_file,
        "champion": champion,
        "challenger": _version_info(cfg, "challenger"),
        "dag_runs": _dag_runs(cfg),
        "drift": None
        if verdict is None
        else {
            k: verdict.get(k)
            for k in ("batch_id", "status", "confirmed", "drifted_features", "report_uri", "model_version")
        },
        "retrains": retrain_log(lake),
        "estimated_performance": estimated_performance(verdict),
        "staleness": history,
        "lake_uri": lake.root,
    }


def estimated_performance(verdict: dict | None) -> dict | None:
    """The last verdict's estimate before labels, its retrain decision, and estimated vs realized by batch."""
    est = (verdict or {}).get("estimate")
    if not est:
        return None
    return {
        "batch_id": verdict.get("batch_id"),
        "method": est.get("method"),
        "metric": est.get("metric"),
        "value": est.get("value"),
        "lower": est.get("lower"),
        "upper": est.get("upper"),
        "holdout_value": est.get("reference_value"),
        "retrain": verdict.get("retrain"),
        "reason": verdict.get("trigger_reason"),
        "by_batch": verdict.get("estimates") or [],
    }


def collect(pipelines: dict[str, PipelineConfig]) -> dict:
    """The whole status document (see docs/status.md)."""
    from airloop import settings

    uri = settings.mlflow_tracking_uri()
    if _sqlite_path(uri) is None:  # a tracking server, or a store not created yet: MLflow's own client
        from airloop.store import tracking

        uri = tracking.configure_mlflow()
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(),
        "tracking_uri": uri,
        "lake_uri": settings.lake_uri(),
        "airloop_home": str(settings.airloop_home()),
        "pipelines": {name: pipeline_status(cfg) for name, cfg in sorted(pipelines.items())},
    }


def render(doc: dict) -> str:
    """The human-readable form of :func:`collect`."""
    lines = [f"MLflow: {doc['tracking_uri']}", f"Lake:   {doc['lake_uri']}", ""]
    for name, p in doc["pipelines"].items():
        champ = p["champion"]
        lines.append(f"pipeline {name}  (model {p['registered_model']})")
        if champ:
            shown = {k: v for k, v in champ["metrics"].items() if k.startswith("test_") or k.startswith("cv_")}
            metrics = ", ".join(f"{k}={v:.4f}" for k, v in list(shown.items())[:5])
            lines.append(
                f"  champion  v{champ['version']} ({champ['candidate']}), promoted {champ['promoted_at']}"
                f" by {champ['promoted_by']}; {metrics}"
            )
            st = champ.get("staleness")
            if st:
                last = f"{st['live'][-1][1]:.4f} on {st['live'][-1][0]}" if st["live"] else "no labels yet"
                lines.append(
                    f"  staleness {st['days_monitored']} day(s) monitored; {st['live_metric']} {last}, trend "
                    f"{st['trend'] or 'n/a'}"
                    + (f" ({st['trend_per_day']:+.4f}/day)" if st["trend_per_day"] is not None else "")
                    + (
                        f"; stale on {st['stale_on']} after {st['days_to_stale']} day(s)"
                        if st["stale_on"]
                        else "; fresh"
                    )
                )
        else:
            lines.append("  champion  none yet")
        for stage, run in p["dag_runs"].items():
            lines.append(f"  {stage:9} " + (f"{run['state']:8} {run['run_id']}" if run else "never ran"))
        d = p["drift"]
        if d:
            feats = ", ".join(d["drifted_features"][:5]) or "-"
            lines.append(f"  drift     {d['batch_id']}: {d['status']} (confirmed: {d['confirmed']}); features: {feats}")
            lines.append(f"            report: {d['report_uri']}")
        else:
            lines.append("  drift     not monitored yet")
        e = p.get("estimated_performance")
        if e and e["value"] is not None:
            realized = [t for t in e["by_batch"] if t["realized"] is not None]
            last = f"; last realized {realized[-1]['realized']:.4f} on {realized[-1]['batch_id']}" if realized else ""
            lines.append(
                f"  estimate  {e['batch_id']}: {e['metric']} {e['value']:.4f} ({e['method']}, holdout "
                f"{e['holdout_value'] if e['holdout_value'] is None else round(e['holdout_value'], 4)}){last}; "
                f"retrain: {e['retrain']} ({e['reason']})"
            )
        lines.append(f"  retrains  {len(p['retrains'])}")
        for h in p.get("staleness") or []:
            if champ and h["model_version"] == champ["version"]:
                continue
            lines.append(
                f"  earlier   v{h['model_version']}: served {h['first_batch']}..{h['last_batch']}, "
                + (f"stale after {h['days_to_stale']} day(s) ({h['stale_reason']})" if h["stale_on"] else "never stale")
            )
        lines.append("")
    return "\n".join(lines)
