"""The back end of the Airloop plugin for the Airflow UI (``plugins/airloop_ui.py`` mounts it at ``/airloop``).

A FastAPI app served by Airflow's api-server:

- ``GET /airloop/``: the Airloop page, one row per pipeline (champion, last gate verdict, drift and staleness,
  the last run of each DAG, pending approvals, links to MLflow, the reports and the DAGs);
- ``GET /airloop/status.json``: the same document as ``airloop status --json`` (docs/status.md);
- ``GET /airloop/ti/{dag_id}/{run_id}/{task_id}``: the evidence one task instance recorded (XCom
  ``airloop_links``, see :mod:`airloop.orchestration.evidence`) as links: MLflow run, model version, model
  card, drift report, Data Docs;
- ``GET /airloop/reports/{pipeline}/{path}``: a file under the pipeline's ``reports/`` in the lake (drift
  reports, Data Docs, profiles), so a browser can open them from any machine, also from an ``s3://`` lake.

FastAPI plugin endpoints are not protected by Airflow automatically: every route depends on
:func:`require_reader`, which resolves the user from the Airflow JWT (the UI's ``_token`` cookie or an
``Authorization: Bearer`` header) and asks the auth manager whether the user may read DAGs.
"""

from __future__ import annotations

import logging
import mimetypes
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

log = logging.getLogger(__name__)

PREFIX = "/airloop"


async def require_reader(request: Request) -> Any:
    """The Airflow user of this request; 401 without a valid token, 403 when the user may not read DAGs."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    credentials = await bearer_scheme(request)
    user = await get_user(request, None, credentials)
    if not get_auth_manager().is_authorized_dag(method="GET", user=user):
        raise HTTPException(status_code=403, detail="Airloop: this user may not read DAGs")
    return user


def _pipelines() -> dict:
    from airloop.config import load_pipelines

    return load_pipelines()


def collect_status() -> dict:
    """The ``airloop status --json`` document (one fact, one place: :func:`airloop.monitoring.status.collect`)."""
    from airloop.monitoring import status

    return status.collect(_pipelines())


def task_links(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict]:
    """The references one task instance recorded (XCom ``airloop_links`` of its latest try), newest call last."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airloop.orchestration import evidence

    with create_session() as session:
        query = select(XComModel.value).where(
            XComModel.dag_id == dag_id,
            XComModel.run_id == run_id,
            XComModel.task_id == task_id,
            XComModel.key == evidence.XCOM_KEY,
        )
        if map_index is not None and map_index >= 0:
            query = query.where(XComModel.map_index == map_index)
        values = session.scalars(query).all()
    out: list[dict] = []
    for value in values:
        out = evidence.merge(out, XComModel.deserialize_value(_Row(value)) or [])
    return out


class _Row:
    """What XComModel.deserialize_value reads: an object with a ``value`` attribute."""

    def __init__(self, value: Any):
        self.value = value


def training_tasks(pipeline: str, limit: int = 10) -> list[dict]:
    """The latest candidate-training task instances of a pipeline with their recorded MLflow run:
    [{"dag_id", "run_id", "task_id", "map_index", "refs"}], newest first."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airloop.orchestration import evidence

    dag_ids = [f"airloop_{pipeline}_train", f"airloop_{pipeline}_retrain"]
    with create_session() as session:
        rows = session.execute(
            select(XComModel.dag_id, XComModel.run_id, XComModel.task_id, XComModel.map_index, XComModel.value)
            .where(
                XComModel.dag_id.in_(dag_ids),
                XComModel.task_id == "train_candidate",
                XComModel.key == evidence.XCOM_KEY,
            )
            .order_by(XComModel.timestamp.desc())
            .limit(limit)
        ).all()
    return [
        {
            "dag_id": r.dag_id,
            "run_id": r.run_id,
            "task_id": r.task_id,
            "map_index": r.map_index,
            "refs": XComModel.deserialize_value(_Row(r.value)) or [],
        }
        for r in rows
    ]


def resolve(refs: list[dict]) -> dict[tuple[str, str], str]:
    """The URL of each recorded reference: MLflow UI pages for runs, versions and artifacts, this plugin's
    report route for lake files. A reference that cannot be resolved gets no link (and is shown as text)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from airloop.orchestration.ui_pages import report_href
    from airloop.store import tracking
    from airloop.store.lake import Lake

    tracking.configure_mlflow()
    client, pipelines, out = MlflowClient(), _pipelines(), {}
    for ref in refs:
        kind, value, pipeline = ref["kind"], ref["ref"], ref.get("pipeline")
        cfg = pipelines.get(pipeline) if pipeline else None
        try:
            if kind == "mlflow_run":
                out[(kind, value)] = tracking.run_url(value)
            elif kind == "model_version" and cfg is not None:
                out[(kind, value)] = tracking.model_version_url(cfg.registered_model_name, value)
            elif kind in ("model_card", "gate_verdict") and value.startswith("runs:/"):
                run_id, _, path = value.removeprefix("runs:/").partition("/")
                exp = client.get_run(run_id).info.experiment_id
                out[(kind, value)] = tracking.artifact_url(exp, run_id, path)
            elif kind in ("drift_report", "data_docs", "profile") and cfg is not None:
                href = report_href(cfg.name, Lake(cfg.name).root, value)
                if href:
                    out[(kind, value)] = href
        except MlflowException as err:
            log.warning("Airloop UI: no link for %s %s: %s", kind, value, err)
    return out


def report_uri(pipeline: str, path: str) -> str:
    """The lake URI of ``reports/<path>`` of a known pipeline; 404 for anything else (no path escapes)."""
    from airloop.store.lake import Lake

    if pipeline not in _pipelines():
        raise HTTPException(status_code=404, detail=f"no pipeline {pipeline!r}")
    parts = [p for p in path.split("/") if p]
    if not parts or any(p in (".", "..") or "\\" in p for p in parts):
        raise HTTPException(status_code=404, detail=f"no report {path!r}")
    return Lake(pipeline).report(*parts)


def create_app() -> FastAPI:
    """The FastAPI app the plugin mounts at ``/airloop``; every route requires an Airflow reader."""
    from airloop.orchestration import ui_pages

    app = FastAPI(title="Airloop", dependencies=[Depends(require_reader)], docs_url=None, redoc_url=None)

    @app.get("/", response_class=HTMLResponse)
    def airloop_page() -> HTMLResponse:
        doc = collect_status()
        training = {name: training_tasks(name) for name in doc["pipelines"]}
        return HTMLResponse(ui_pages.status_page(doc, training))

    @app.get("/status.json")
    def status_json() -> JSONResponse:
        import json

        # default=str: the same serialisation as `airloop status --json`
        return JSONResponse(json.loads(json.dumps(collect_status(), default=str)))

    @app.get("/ti/{dag_id}/{run_id}/{task_id}", response_class=HTMLResponse)
    def task_instance_page(dag_id: str, run_id: str, task_id: str, map_index: str = "-1") -> HTMLResponse:
        try:
            index = int(map_index)
        except ValueError:
            index = -1  # the UI leaves {MAP_INDEX} unfilled for an unmapped task
        refs = task_links(dag_id, run_id, task_id, index)
        return HTMLResponse(ui_pages.task_page(dag_id, run_id, task_id, index, refs, resolve(refs)))

    @app.get("/reports/{pipeline}/{path:path}")
    def report(pipeline: str, path: str) -> Response:
        from airloop.store import lake as lk

        uri = report_uri(pipeline, path)
        if not lk.exists(uri):
            raise HTTPException(status_code=404, detail=f"no report at {uri}")
        media = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return Response(lk.read_bytes(uri), media_type=media)

    return app


def absolute(url: str) -> str:
    """``url`` made absolute with Airflow's ``[api] base_url`` when it is a path of this server (the UI shows
    extra links only with an http(s) URL); empty when that is not configured."""
    if not url.startswith("/"):
        return url
    from airflow.configuration import conf

    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    return f"{base}{url}" if base.startswith("http") else ""


def evidence_link_classes() -> list[type]:
    """Operator extra links (one per kind of evidence) shown on every task instance in the Airflow UI; each is
    the URL of what that task recorded (XCom ``airloop_links``), empty (a disabled button) when it recorded none.
    Evaluated by the api-server, which reads the XCom."""
    from airflow.sdk import BaseOperatorLink

    from airloop.orchestration.evidence import LABELS

    def make(kind: str, label: str) -> type:
        def get_link(self, operator, *, ti_key) -> str:
            try:
                refs = task_links(ti_key.dag_id, ti_key.run_id, ti_key.task_id, ti_key.map_index)
                mine = [r for r in refs if r["kind"] == kind][:1]
                url = resolve(mine).get((kind, mine[0]["ref"]), "") if mine else ""
                return absolute(url)
            except Exception as err:  # noqa: BLE001 - a link must never break the task page
                log.warning("Airloop: no %s link for %s: %s", kind, ti_key, err)
                return ""

        name = f"Airloop{kind.title().replace('_', '')}Link"
        return type(name, (BaseOperatorLink,), {"name": label, "get_link": get_link, "__module__": __name__})

    return [make(kind, label) for kind, label in LABELS.items() if kind not in ("gate_verdict", "profile")]
