"""Shared wiring for Airloop's DAG files: pipelines, Assets, default args, and task helpers.

The one module of the package that speaks Airflow's Task SDK (stage modules never import Airflow). DAG files
import it as ``airloop.orchestration.dagkit`` (``plugins/`` is on Airflow's sys.path). Parse-time work is
limited to reading the pipeline YAML files: no heavy imports, no DB, no network.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from airflow.sdk import Asset, AssetAlias, CronDataIntervalTimetable, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airloop.config import PipelineConfig, PipelineConfigError, load_pipeline
from airloop.errors import BadInput, NothingToDo
from airloop.settings import pipelines_dir

log = logging.getLogger("airloop")


def pipelines() -> tuple[list[PipelineConfig], dict[str, str]]:
    """Valid pipelines, and the error message of each invalid YAML file by file name."""
    good, bad = [], {}
    folder = pipelines_dir()
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            good.append(load_pipeline(path))
        except PipelineConfigError as err:
            bad[path.stem] = str(err)
    return good, bad


def asset(cfg: PipelineConfig, kind: str) -> Asset:
    """The Asset that chains the DAGs: validated, trained, challenger, drift (and raw, predictions)."""
    return Asset(name=f"airloop.{cfg.name}.{kind}", uri=f"x-airloop://{cfg.name}/{kind}", group="airloop")


def alias(cfg: PipelineConfig, kind: str) -> AssetAlias:
    """An AssetAlias: a task outlet that emits an event on its Asset only when the task adds one (for events
    that depend on what the task found, such as ``first-model``: a validated batch and no champion yet)."""
    return AssetAlias(name=f"airloop.{cfg.name}.{kind}.alias", group="airloop")


def schedule(cron: str | None):
    """A cron schedule whose runs cover the interval that just ended (batch = interval start)."""
    return CronDataIntervalTimetable(cron, timezone="UTC") if cron else None


def dag_args(cfg: PipelineConfig, stage: str, doc: str, **kwargs: Any) -> dict:
    """Common DAG arguments: id ``airloop_<pipeline>_<stage>``, tags, retries, doc_md, one run at a time."""
    return {
        "dag_id": cfg.dag_id(stage),
        "description": f"{stage} for pipeline {cfg.name}",
        "doc_md": f"### {cfg.name}: {stage}\n\n{doc}\n\nPipeline file: `{cfg.source_file}`.",
        "tags": ["airloop", f"pipeline:{cfg.name}", f"stage:{stage}"],
        "start_date": dt.datetime.fromisoformat(cfg.schedule.start_date).replace(tzinfo=dt.UTC),
        "catchup": False,
        "max_active_runs": 1,
        "default_args": {"owner": cfg.owner, "retries": 2, "retry_delay": dt.timedelta(minutes=1)},
        **kwargs,
    }


def optional_text(description: str) -> Param:
    """A text Param that may stay empty. The trigger form sends an empty field as null, so the type admits
    null (a plain ``"string"`` Param keeps the form's Trigger button disabled until something is typed)."""
    return Param(None, type=["null", "string"], description=description)


def batch_param(help_text: str = "Batch (data interval start, YYYY-MM-DD); empty: from the trigger") -> Param:
    return optional_text(help_text)


def run_info(context: dict) -> dict:
    """The Airflow ids recorded as lineage in MLflow and manifests."""
    ti = context["ti"]
    return {"dag_id": ti.dag_id, "run_id": ti.run_id, "try_number": ti.try_number, "map_index": ti.map_index}


def batch_ids(context: dict, trigger: Asset | None = None) -> list[str]:
    """Batches this run works on: the ``batch_id`` Param, else the triggering Asset events' batches, else
    the start of the run's data interval."""
    explicit = (context["params"].get("batch_id") or "").strip()
    if explicit:
        return [explicit]
    if trigger is not None:
        events = context["triggering_asset_events"][trigger]
        found = sorted({b for e in events if e.extra for b in e.extra.get("batch_ids", [e.extra.get("batch_id")]) if b})
        if found:
            return found
    start = context.get("data_interval_start") or context.get("logical_date")
    if start is None:
        raise AirflowFailException("no batch_id Param, no triggering Asset event and no data interval")
    return [start.date().isoformat()]


def trigger_extra(context: dict, trigger: Asset, key: str) -> Any:
    """``key`` from the ``key`` Param, else from the newest triggering event of ``trigger``."""
    value = context["params"].get(key)
    if value not in (None, ""):
        return value
    events = context["triggering_asset_events"][trigger]
    for event in reversed(list(events)):
        if event.extra and event.extra.get(key) not in (None, ""):
            return event.extra[key]
    raise AirflowFailException(f"no {key!r} Param and no triggering {trigger.name} event carrying one")


def call(fn, *args, **kwargs):
    """Run one stage function, mapping its 'nothing to do' and 'bad input' errors onto Airflow's
    skip and fail-without-retry, and end the log with a summary block."""
    try:
        result = fn(*args, **kwargs)
    except NothingToDo as err:
        log.info("Airloop: skipped: %s", err)
        get_current_context()["ti"].xcom_push(key="airloop_skip", value=str(err))
        raise AirflowSkipException(str(err)) from err
    except BadInput as err:
        # No retry can fix bad input: fail at once, with the stage's own message (also kept in XCom, so
        # `airloop run` and the UI can show the reason without digging in the log).
        log.error("Airloop: refused (%s): %s", type(err).__name__, err)
        get_current_context()["ti"].xcom_push(key="airloop_refusal", value=f"{type(err).__name__}: {err}")
        raise AirflowFailException(f"{type(err).__name__}: {err}") from err
    _record_links(fn, args, result)
    summary = result.get("summary") if isinstance(result, dict) else None
    lines = [f"  {k}: {v}" for k, v in (result or {}).items() if k != "summary"] if isinstance(result, dict) else []
    log.info("Airloop summary: %s\n%s%s", fn.__name__, "\n".join(lines), f"\n{summary}" if summary else "")
    return result


_links_by_task: dict[tuple, list[dict]] = {}


def _record_links(fn, args: tuple, result: Any) -> None:
    """Keep what this stage result references (MLflow run, model version, reports) in XCom ``airloop_links``,
    accumulated over the stage calls of one task try, for the UI plugin's task-instance links."""
    from airloop.orchestration import evidence

    pipeline = args[0].name if args and isinstance(args[0], PipelineConfig) else None
    refs = evidence.references(result, pipeline)
    if not refs:
        return
    ti = get_current_context()["ti"]
    key = (ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.try_number)
    _links_by_task[key] = evidence.merge(_links_by_task.get(key, []), refs)
    ti.xcom_push(key=evidence.XCOM_KEY, value=_links_by_task[key])


def invalid_pipeline_dag(stem: str, message: str):
    """A visible placeholder for a pipeline YAML that does not validate: its doc and its one task show the
    error, so an operator sees it in the UI instead of the pipeline silently missing."""

    @dag(
        dag_id=f"airloop_invalid_{stem}",
        schedule=None,
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        tags=["airloop", "invalid-pipeline"],
        doc_md=f"### Invalid pipeline file\n\n```\n{message}\n```",
        default_args={"retries": 0},
        catchup=False,
    )
    def invalid():
        @task
        def explain():
            raise AirflowFailException(message)

        explain()

    return invalid()


__all__ = [
    "asset",
    "batch_ids",
    "batch_param",
    "call",
    "dag_args",
    "get_current_context",
    "invalid_pipeline_dag",
    "optional_text",
    "pipelines",
    "run_info",
    "schedule",
    "trigger_extra",
]


def connection_dict(conn_id: str | None) -> dict | None:
    """The Airflow Connection ``conn_id`` (from the metadata DB, a secrets backend or an ``AIRFLOW_CONN_<ID>``
    environment variable) as the small dict stage modules take (see :mod:`airloop.data.sources`); None when no
    connection is named, so the stage falls back to the environment."""
    if not conn_id:
        return None
    from airflow.sdk import Connection

    try:
        conn = Connection.get(conn_id)
    except Exception as err:  # AirflowNotFoundException and friends; the id and the fix are what matter
        raise AirflowFailException(
            f"source.connection {conn_id!r}: no such Airflow Connection ({type(err).__name__}); create it in "
            f"the UI or set AIRFLOW_CONN_{conn_id.upper()}"
        ) from None
    return {
        "conn_type": conn.conn_type,
        "host": conn.host,
        "port": conn.port,
        "login": conn.login,
        "password": conn.password,
        "schema": conn.schema,
        "extra": conn.extra_dejson,
    }


def approval_task(cfg: PipelineConfig, evidence_task_id: str):
    """Airflow's HITL ``ApprovalOperator`` (task id ``approve``): shows the approver the subject and Markdown
    body returned by ``evidence_task_id``; no answer within ``promotion.approval_timeout_hours`` rejects.
    The decision and who made it go to XCom ``airloop_decision`` (also on Reject, which returns nothing)."""
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    class RecordedApproval(ApprovalOperator):
        def execute_complete(self, context, event):
            if "error" not in event and event.get("chosen_options"):
                user = event.get("responded_by_user") or {}
                at = event.get("responded_at")
                decision = {
                    "decision": event["chosen_options"][0],
                    "approved_by": user.get("name") or user.get("id") or "nobody (timed out: default)",
                    "approved_by_id": user.get("id"),
                    "responded_at": at.isoformat() if hasattr(at, "isoformat") else str(at),
                }
                context["ti"].xcom_push(key="airloop_decision", value=decision)
            return super().execute_complete(context, event)

    pull = f"ti.xcom_pull(task_ids='{evidence_task_id}')"
    return RecordedApproval(
        task_id="approve",
        subject="{{ " + pull + "['subject'] }}",
        body="{{ " + pull + "['body'] }}",
        defaults="Reject",
        response_timeout=dt.timedelta(hours=cfg.promotion.approval_timeout_hours),
    )


def approval_decision(context: dict, task_id: str) -> dict | None:
    """The decision recorded by :func:`approval_task`: {"decision", "approved_by", "approved_by_id",
    "responded_at", "dag_run"}; None when there was none (the task failed or never ran)."""
    decision = context["ti"].xcom_pull(task_ids=task_id, key="airloop_decision")
    if not decision:
        return None
    return {**decision, "dag_run": context["ti"].run_id}


def drift_alert_notifier(cfg: PipelineConfig):
    """The notifier of a confirmed drift (``on_success_callback`` of the monitor's alert task): it logs the
    alert and, when ``monitoring.alert_connection`` names an Airflow Connection, POSTs it as JSON to that
    connection's URL (host, or schema://host:port/path; a password becomes a Bearer token). A failed
    webhook is logged, never raised: the drift Asset event has already been emitted."""
    from airflow.sdk import BaseNotifier

    class DriftAlertNotifier(BaseNotifier):
        def notify(self, context) -> None:
            from airloop.monitoring import monitor

            ti = context["ti"]
            verdict = ti.xcom_pull(task_ids="monitor") or {}
            doc = {**monitor.alert_document(cfg, verdict), "dag_id": ti.dag_id, "run_id": ti.run_id}
            log.warning("%s", doc["text"])
            conn_id = cfg.monitoring.alert_connection
            if not conn_id:
                return
            try:
                from airflow.sdk import BaseHook

                conn = BaseHook.get_connection(conn_id)
                host = conn.host or ""
                url = host if "://" in host else f"{conn.schema or 'https'}://{host}"
                if conn.port:
                    url = f"{url}:{conn.port}"
                headers = {"Authorization": f"Bearer {conn.password}"} if conn.password else {}
                status = monitor.post_webhook(url, doc, headers=headers)
                log.info("Airloop: drift alert posted to connection %r (HTTP %s)", conn_id, status)
            except Exception as err:  # noqa: BLE001 - alerting must not fail the task that emitted the event
                log.error("Airloop: could not post the drift alert to connection %r: %s", conn_id, err)

    return DriftAlertNotifier()
