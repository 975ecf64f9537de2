"""MLflow plumbing shared by the stages: where the tracking store is, the pipeline's experiment, run links,
and the lineage tags (Airflow run, git sha, uv.lock hash) that every run carries.

Nothing happens at import time; ``configure_mlflow()`` is called by each stage function before it logs.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from airloop import settings
from airloop.config import PipelineConfig
from airloop.errors import AirloopError

DEFAULT_UI_URL = "http://127.0.0.1:5000"


# MLflow's own HTTP defaults retry for minutes (7 retries, backoff factor 2, 120 s timeout): a dead server
# then looks like a hung task. Airloop bounds them unless the environment sets them.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
PROBE_ATTEMPTS = 3
PROBE_TIMEOUT_S = 10.0
_reachable: set[str] = set()


class TrackingUnavailable(AirloopError, ConnectionError):
    """The MLflow tracking server cannot be reached; the message names its URI and what failed."""


def _probe(uri: str) -> None:
    """TrackingUnavailable within ~35 s unless ``{uri}/health`` answers; once per process per URI."""
    import time

    import requests

    if uri in _reachable:
        return
    error: Exception | str = ""
    for attempt in range(PROBE_ATTEMPTS):
        try:
            answer = requests.get(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S)
            if answer.status_code < 500:
                _reachable.add(uri)
                return
            error = f"HTTP {answer.status_code}"
        except requests.RequestException as err:
            error = err
        if attempt + 1 < PROBE_ATTEMPTS:
            time.sleep(2**attempt)
    raise TrackingUnavailable(
        f"MLflow tracking server {uri} (MLFLOW_TRACKING_URI): not reachable after {PROBE_ATTEMPTS} attempts "
        f"({type(error).__name__ if isinstance(error, Exception) else 'error'}: {error}); expected a running "
        f"`mlflow server` answering {uri.rstrip('/')}/health. Nothing that needs MLflow was done."
    )


def configure_mlflow() -> str:
    """Point MLflow's tracking and registry at ``settings.mlflow_tracking_uri()``; returns that URI.

    Safe to call again. For the embedded SQLite store the parent folder is created. For a tracking server
    (http/https) MLflow's HTTP retries are bounded (:data:`HTTP_DEFAULTS`, unless set in the environment)
    and the server is probed once per process: :class:`TrackingUnavailable`, naming the URI, within ~35 s.
    """
    uri = settings.mlflow_tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if uri.startswith(("http://", "https://")):
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        _probe(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


# MLflow's record of an experiment's kind: Airloop's are classic model development. MLflow 3.17's UI does not
# read it to pick the view (its global GenAI / Model training switch decides; docs/ui.md, "In MLflow").
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

# Candidate (training) runs are kept apart from the runs that check data and models: each purpose has its own
# experiment, so the training view lists only candidates, comparable side by side (their own experiment, not a
# tag filter, because MLflow's UI cannot default a filter: every visitor would first see validate and monitor
# runs on top). Each run also carries tag ``airloop.run_type``.
PURPOSES = {"training": "", "data": "/data", "monitoring": "/monitoring"}
RUN_TYPE_TAG = "airloop.run_type"


def experiment_name(cfg: PipelineConfig, purpose: str = "training") -> str:
    """``airloop/<name>`` for candidates, ``airloop/<name>/data`` for validation and profiles,
    ``airloop/<name>/monitoring`` for drift monitoring."""
    if purpose not in PURPOSES:
        raise ValueError(f"experiment purpose: expected one of {sorted(PURPOSES)}, found {purpose!r}")
    return cfg.experiment_name + PURPOSES[purpose]


def ensure_experiment(cfg: PipelineConfig, purpose: str = "training") -> str:
    """The experiment id of :func:`experiment_name` for ``purpose``, created (or restored) on first use, and
    tagged as a model-development experiment (its kind; the view MLflow opens is chosen by the link, see
    :data:`TRAINING_VIEW`).

    New experiments store artifacts under ``{mlflow_artifact_root()}/{pipeline}`` when a root is configured,
    so pipelines do not share one folder; with no root the tracking server decides.
    """
    configure_mlflow()
    client = MlflowClient()
    name = experiment_name(cfg, purpose)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # made before Airloop set the kind
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    root = settings.mlflow_artifact_root()
    location = f"{root.rstrip('/')}/{cfg.name}{PURPOSES[purpose]}" if root else None
    try:
        return client.create_experiment(
            name,
            artifact_location=location,
            tags={
                "airloop.pipeline": cfg.name,
                "airloop.task": cfg.task,
                "airloop.purpose": purpose,
                EXPERIMENT_KIND_TAG: EXPERIMENT_KIND,
            },
        )
    except MlflowException:
        # Another task (a sibling mapped candidate) may have created it in the meantime.
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def ui_url() -> str:
    """The MLflow UI's base URL (``AIRLOOP_MLFLOW_UI_URL``, default http://127.0.0.1:5000)."""
    return os.environ.get("AIRLOOP_MLFLOW_UI_URL", DEFAULT_UI_URL).rstrip("/")


# MLflow 3.17's UI chooses GenAI or model training from this URL parameter, else from the browser's remembered
# switch (default GenAI: Traces, Token Usage; `mlflow ui --app-name airloop` presets it, store/mlflow_app.py),
# never from the kind tag; so Airloop's links carry it.
TRAINING_VIEW = "?workflowType=machine_learning"


def experiment_url(experiment_id: str, primary_metric: str | None = None) -> str:
    """The experiment's runs tab in MLflow's training view. With ``primary_metric`` (a training experiment's),
    the runs are sorted by its holdout value (``test_<metric>``), best first; runs without it (nested tuning
    trials) come last. The runs tab itself, because MLflow's redirect from a bare experiment drops the query."""
    from urllib.parse import urlencode

    query = TRAINING_VIEW
    if primary_metric:
        from airloop.model.directions import greater_is_better

        ascending = str(not greater_is_better(primary_metric)).lower()
        query += "&" + urlencode({"orderByKey": f"metrics.`test_{primary_metric}`", "orderByAsc": ascending})
    return f"{ui_url()}/#/experiments/{experiment_id}/runs{query}"


def model_version_url(model_name: str, version: str) -> str:
    return f"{ui_url()}/#/models/{model_name}/versions/{version}"


def artifact_url(experiment_id: str, run_id: str, path: str) -> str:
    """A link to one artifact of a run in the MLflow UI's artifact browser."""
    return f"{ui_url()}/#/experiments/{experiment_id}/runs/{run_id}/artifactPath/{path}"


def run_url(run_id: str) -> str:
    """A link to the run in the MLflow UI (``AIRLOOP_MLFLOW_UI_URL``, default http://127.0.0.1:5000)."""
    configure_mlflow()
    ui = ui_url()
    try:
        exp = MlflowClient().get_run(run_id).info.experiment_id
    except MlflowException:
        exp = "0"
    return f"{ui}/#/experiments/{exp}/runs/{run_id}"


def code_version() -> dict[str, str]:
    """``{"git_sha", "uv_lock_sha256"}`` of the checkout at ``settings.REPO_ROOT``; "unknown" if unavailable."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=settings.REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        git_sha = out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        git_sha = "unknown"
    lock = settings.REPO_ROOT / "uv.lock"
    try:
        lock_sha = hashlib.sha256(lock.read_bytes()).hexdigest()
    except OSError:
        lock_sha = "unknown"
    return {"git_sha": git_sha, "uv_lock_sha256": lock_sha}


def lineage_tags(run_info: dict[str, Any] | None) -> dict[str, str]:
    """MLflow tags linking a run to its Airflow task and code version.

    ``run_info`` is ``{"dag_id", "run_id", "try_number", "map_index"}`` (any may be missing, or None outside
    Airflow); gives ``airflow.*`` tags plus ``airloop.git_sha`` and ``airloop.uv_lock_sha256``.
    """
    tags: dict[str, str] = {}
    info = run_info or {}
    for key in ("dag_id", "run_id", "try_number"):
        if info.get(key) is not None:
            tags[f"airflow.{key}"] = str(info[key])
    map_index = info.get("map_index")
    if map_index is not None and int(map_index) >= 0:
        tags["airflow.map_index"] = str(map_index)
    code = code_version()
    tags["airloop.git_sha"] = code["git_sha"]
    tags["airloop.uv_lock_sha256"] = code["uv_lock_sha256"]
    return tags
