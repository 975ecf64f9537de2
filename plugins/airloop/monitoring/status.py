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
# Where each kind of metric was measured; every metric Airloop shows carries one of these.
WHERE = {
    "holdout": "holdout (frozen test split of the training data)",
    "cv": "CV (k-fold cross-validation on the training split)",
    "window": "recent window (latest labeled production batches)",
    "live": "live (this champion's scored batches, labels joined)",
}
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


def _version_facts(cfg: PipelineConfig, version: str, run_id: str, tags: dict, run_tags: dict, metrics: dict):
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
        **_measured(cfg, metrics),
        "gate": _gate_of(run_tags),
        "model_card": tags.get("airloop.model_card"),
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
    return _version_facts(cfg, version, run_id, tags, run_tags, metrics)


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
    return _version_facts(cfg, mv.version, mv.run_id, mv.tags, run.data.tags, run.data.metrics)


def _measured(cfg: PipelineConfig, metrics: dict) -> dict:
    """The primary metric named by where it was measured: {"holdout": {...}, "cv": {...}} (None when absent)."""
    metric = cfg.primary_metric
    out = {}
    for key, prefix in (("holdout", "test_"), ("cv", "cv_")):
        out[key] = _metric_entry(metric, metrics.get(f"{prefix}{metric}"), key)
    return out


def _metric_entry(metric: str, value: float | None, where: str) -> dict | None:
    return None if value is None else {"metric": metric, "value": round(value, 5), "measured_on": WHERE[where]}


def _gate_of(tags: dict) -> dict | None:
    """The gate verdict recorded on a training run's tags (see airloop.model.evaluate), or None."""
    verdict = tags.get("airloop.gate.verdict")
    if not verdict:
        return None
    return {
        "verdict": verdict,
        "reasons": [r for r in tags.get("airloop.gate.reasons", "").splitlines() if r],
        "champion_version": tags.get("airloop.gate.champion_version"),
        "registered_version": tags.get("airloop.registered_version"),
        "dag_id": tags.get("airloop.gate.dag_id"),
        "dag_run_id": tags.get("airloop.gate.run_id"),
    }


# The experiments of a pipeline by purpose (as airloop.store.tracking.PURPOSES, which imports MLflow).
EXPERIMENT_SUFFIXES = {"training": "", "data": "/data", "monitoring": "/monitoring"}


def _mlflow_db() -> Path | None:
    from airloop import settings

    return _sqlite_path(settings.mlflow_tracking_uri())


def _gate_entry(cfg: PipelineConfig, run_id: str, tags: dict, metrics: dict) -> dict:
    metric = cfg.primary_metric
    return {
        "run_id": run_id,
        "candidate": tags.get("airloop.candidate"),
        "holdout": _metric_entry(metric, metrics.get(f"test_{metric}"), "holdout"),
        **(_gate_of(tags) or {}),
    }


def _last_gate_sqlite(db: Path, cfg: PipelineConfig) -> dict | None:
    with _read_only(db) as con:
        row = con.execute(
            "select r.run_uuid from runs r join experiments e on e.experiment_id = r.experiment_id "
            "join tags t on t.run_uuid = r.run_uuid and t.key = 'airloop.gate.verdict' "
            "where e.name = ? and r.lifecycle_stage = 'active' order by r.start_time desc limit 1",
            (cfg.experiment_name,),
        ).fetchone()
        if row is None:
            return None
        run_id = row[0]
        tags = dict(con.execute("select key, value from tags where run_uuid = ?", (run_id,)))
        metrics = dict(con.execute("select key, value from latest_metrics where run_uuid = ?", (run_id,)))
    return _gate_entry(cfg, run_id, tags, metrics)


def _last_gate(cfg: PipelineConfig) -> dict | None:
    """The most recent gate verdict of the pipeline (blessed or rejected), from the training experiment."""
    db = _mlflow_db()
    if db is not None:  # the embedded default: read MLflow's SQLite store without importing MLflow
        return _last_gate_sqlite(db, cfg)
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name(cfg.experiment_name)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string="tags.`airloop.gate.verdict` LIKE '%'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run = runs[0]
    return _gate_entry(cfg, run.info.run_id, run.data.tags, run.data.metrics)


def _experiments(cfg: PipelineConfig) -> dict:
    """The pipeline's MLflow experiments by purpose: {"training"|"data"|"monitoring": {"name", "id"}}
    ("id" None until the first run of that purpose)."""
    names = {purpose: cfg.experiment_name + suffix for purpose, suffix in EXPERIMENT_SUFFIXES.items()}
    db = _mlflow_db()
    if db is not None:
        with _read_only(db) as con:
            ids = dict(
                con.execute(
                    "select name, experiment_id from experiments where name like ?", (f"{cfg.experiment_name}%",)
                )
            )
        return {purpose: {"name": n, "id": str(ids[n]) if n in ids else None} for purpose, n in names.items()}
    from mlflow.tracking import MlflowClient

    client, out = MlflowClient(), {}
    for purpose, name in names.items():
        exp = client.get_experiment_by_name(name)
        out[purpose] = {"name": name, "id": exp.experiment_id if exp else None}
    return out


def _pending_approvals(cfg: PipelineConfig) -> list[dict]:
    """Promotions waiting for a person (Airflow HITL requests of the promote DAG without a response)."""
    import os

    dag_id = cfg.dag_id("promote")
    db = _sqlite_path(os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", ""))
    if db is not None:  # the embedded default: read the file, without importing Airflow (seconds)
        with _read_only(db) as con:
            rows = con.execute(
                "select h.subject, h.created_at, ti.run_id, ti.task_id from hitl_detail h "
                "join task_instance ti on ti.id = h.ti_id where ti.dag_id = ? and h.responded_at is null "
                "order by h.created_at",
                (dag_id,),
            ).fetchall()
        return [
            {"dag_id": dag_id, "run_id": r[2], "task_id": r[3], "subject": r[0], "requested_at": _utc_iso(r[1])}
            for r in rows
        ]
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(HITLDetail.subject, HITLDetail.created_at, TaskInstance.run_id, TaskInstance.task_id)
            .join(TaskInstance, TaskInstance.id == HITLDetail.ti_id)
            .where(TaskInstance.dag_id == dag_id, HITLDetail.responded_at.is_(None))
            .order_by(HITLDetail.created_at)
        ).all()
    return [
        {
            "dag_id": dag_id,
            "run_id": r.run_id,
            "task_id": r.task_id,
            "subject": r.subject,
            "requested_at": r.created_at.isoformat() if r.created_at else None,
        }
        for r in rows
    ]


def _last_validation(lake: Lake) -> dict | None:
    """The newest batch manifest's validation: {"batch_id", "verdict", "data_docs", "mlflow_run_id"}."""
    from airloop.store import lake as lk

    manifests = sorted(u for u in lk.list_uris(lk.join(lake.root, "manifests"), recursive=False) if u.endswith(".json"))
    for uri in reversed(manifests):
        validation = lk.read_json(uri).get("validation")
        if validation:
            return {
                "batch_id": uri.rsplit("/", 1)[-1].removesuffix(".json"),
                "verdict": validation.get("verdict"),
                "data_docs": validation.get("data_docs"),
                "mlflow_run_id": validation.get("mlflow_run_id"),
            }
    return None


def _top_features(verdict: dict, n: int = 5) -> list[list]:
    """The features with the largest PSI in a drift verdict, largest first: [[feature, psi], ...]."""
    psi = verdict.get("psi") or {}
    return [[f, v] for f, v in sorted(psi.items(), key=lambda kv: -kv[1])[:n]]


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
    out = {
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
        "experiments": _experiments(cfg),
        "gate": _last_gate(cfg),
        "approvals": _pending_approvals(cfg),
        "validation": _last_validation(lake),
    }
    if out["drift"] is not None:
        out["drift"]["top_features"] = _top_features(verdict)
        out["drift"]["live"] = verdict.get("live") or {}
    return out


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
            metrics = "; ".join(
                f"{m['metric']} {m['value']:.4f} on {m['measured_on'].split(' (')[0]}"
                for m in (champ.get("holdout"), champ.get("cv"))
                if m
            )
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
        gate = p.get("gate")
        if gate:
            lines.append(
                f"  gate      {gate['verdict']}: candidate {gate['candidate']} (run {gate['run_id']})"
                + (f", registered v{gate['registered_version']}" if gate.get("registered_version") else "")
            )
            lines += [f"            {r}" for r in gate["reasons"]]
        for a in p.get("approvals") or []:
            lines.append(f"  approval  pending since {a['requested_at']}: {a['subject']} ({a['dag_id']} {a['run_id']})")
        for stage, run in p["dag_runs"].items():
            lines.append(f"  {stage:9} " + (f"{run['state']:8} {run['run_id']}" if run else "never ran"))
        d = p["drift"]
        if d:
            feats = ", ".join(d["drifted_features"][:5]) or "-"
            if d.get("top_features"):
                feats += "; largest PSI: " + ", ".join(f"{f} {v:.3f}" for f, v in d["top_features"][:3])
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
