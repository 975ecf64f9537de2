"""What Airloop's task processes import before they fork, once per executor worker instead of once per task.

Each Airflow task runs in a process forked from its executor's worker (the LocalExecutor's worker, or the Celery
worker's pool process). pandas, pyarrow, scikit-learn, MLflow (with its SQL stores' ORM models) and Great
Expectations take seconds to import, and tens of seconds on a loaded machine: paid per task, they dominated every
task's run time. Imported in the worker, every task process starts with them already in memory. Used by
:mod:`airloop.orchestration.executor` (LocalExecutor) and :mod:`airloop.orchestration.celery_config` (Celery).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib
import logging
import os
import warnings
from pathlib import Path

PRELOAD = (
    "pandas",
    "pyarrow.parquet",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.model_selection",
    "mlflow",
    "mlflow.sklearn",
    # MLflow's SQL stores (the embedded default and PostgreSQL): their ORM models take seconds to import and
    # configure, and every task that logs a run or reads the registry opens one.
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    # What opening those stores, starting a run and logging a model import beyond them (the workspace stores, the
    # schema check's alembic commands, the tracing processors and OpenTelemetry's metrics SDK, pyfunc), GitPython
    # for a run's source tags, pyarrow's datasets and narwhals: 0.1-0.3 s in every task that touches MLflow.
    "mlflow.store.tracking.sqlalchemy_workspace_store",
    "mlflow.store.model_registry.sqlalchemy_workspace_store",
    "mlflow.tracing.processor.otel",
    "mlflow.tracing.processor.base_mlflow",
    "mlflow.tracing.export.utils",
    "mlflow.tracing.utils.environment",
    "mlflow.pyfunc",
    "alembic.command",
    "alembic.config",
    "opentelemetry.sdk.metrics",
    "git",
    "netrc",
    "pyarrow.dataset",
    "narwhals.stable.v2",
    # What the first pandas frame through narwhals (MLflow's dataset and schema code, in prepare, train and
    # evaluate) imports: 0.4 s per task.
    "narwhals.stable.v2._namespace",
    "narwhals._pandas_like.dataframe",
    "narwhals._pandas_like.namespace",
    "narwhals._interchange.dataframe",
    "pandas.core.arrays.arrow.extension_types",
    "pandas.core.methods.to_dict",
    # What logging a model and writing the gate's plots and data docs import beyond the above.
    "mlflow.pyfunc.scoring_server",
    "mlflow.models.display_utils",
    "matplotlib.backends.backend_agg",
    "great_expectations.render.renderer.site_builder",
    "jinja2.ext",
    "tzdata",
    # Each training task's search (optuna), and the gate's explanations and plots (shap, with numba, and
    # matplotlib; pyplot is imported by the task, after it selects the Agg backend).
    "optuna",
    "shap",
    "matplotlib",
    # skops (every model load) lists scipy's ufuncs at import with pickle's whichmodule, a getattr on every loaded
    # module: in a task process each of Airflow's deprecated modules answered with a warning, 1,160 log lines and
    # 3-4 s per task.
    "skops.io",
    "great_expectations",
    "airloop.store.lake",
    "airloop.store.registry",
    "airloop.data.ingest",
    "airloop.data.validate",
    "airloop.serving.score",
    "airloop.monitoring.monitor",
    "airloop.model.plan",
    "airloop.model.train",
    "airloop.model.evaluate",
    "airloop.model.tuning",
    "airloop.model.feasibility",
    "airloop.model.explain",
    "airloop.model.plots",
    "airloop.model.modelcard",
    "airloop.model.conformal",
    "airloop.model.suspects",
    "airloop.serving.review",
)


def preload() -> None:
    """Import the heavy modules, then configure the ORM mappers they declared (SQLAlchemy does that at the first
    query otherwise, in every task), then open MLflow's stores (:func:`open_mlflow_stores`); one that fails is
    logged and left to the task to report. Also installs :mod:`airloop.orchestration.task_exit` (the supervisor
    sees a task's exit at once, not up to 5 s later)."""
    from airloop.orchestration import task_exit

    task_exit.install()
    for name in PRELOAD:
        try:
            with warnings.catch_warnings():  # import-time deprecation noise, not the task's to read
                warnings.simplefilter("ignore")
                importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - the task that needs it will fail with the real error
            logging.getLogger("airloop").warning("preload of %s failed: %s", name, err)
    try:
        from sqlalchemy.orm import configure_mappers

        configure_mappers()
    except Exception as err:  # noqa: BLE001 - as above
        logging.getLogger("airloop").warning("configuring the ORM mappers failed: %s", err)
    try:
        open_mlflow_stores()
    except Exception as err:  # noqa: BLE001 - as above
        logging.getLogger("airloop").warning("opening MLflow's stores failed: %s", err)


SQL_SCHEMES = ("sqlite:", "postgresql", "mysql", "mssql")


def open_mlflow_stores() -> list:
    """MLflow's tracking and registry stores of ``settings.mlflow_tracking_uri()``, opened once here instead of
    in every task process; returns their SQLAlchemy engines (none for a tracking server).

    Opening a SQL store creates its engine and checks the schema against MLflow's migrations (tables created on
    a new database): about 0.1 s per task, the first time 1 s. MLflow keeps the stores per URI for the process,
    so every process forked from here reuses them. What is not shared is a connection: the pools are emptied
    here, and each forked process starts with an empty pool of its own (SQLAlchemy's recipe for engines across
    fork, ``dispose(close=False)``), so no SQLite or PostgreSQL connection crosses a fork. A tracking server
    (http) is left alone: there is nothing to open, and the task probes it. A file lock keeps two workers that
    start together from creating the same new database twice.
    """
    from airloop import settings

    uri = settings.mlflow_tracking_uri()
    if not uri.startswith(SQL_SCHEMES):
        return []
    from mlflow.tracking import MlflowClient

    from airloop.store.tracking import configure_mlflow

    # An exclusive lock beside a SQLite database, as for Airflow's (runner.ensure_airflow_db); a server locks itself.
    lock = Path(uri.removeprefix("sqlite:///") + ".init-lock") if uri.startswith("sqlite:///") else None
    if lock is not None:
        lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") if lock is not None else contextlib.nullcontext() as handle:
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        configure_mlflow()
        client = MlflowClient()
        stores = (client._tracking_client.store, client._get_registry_client().store)
    engines = list({id(e): e for e in (getattr(s, "engine", None) for s in stores) if e is not None}.values())
    for engine in engines:
        engine.dispose()
        os.register_at_fork(after_in_child=functools.partial(engine.dispose, close=False))
    return engines
