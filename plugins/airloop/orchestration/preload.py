"""What Airloop's task processes import before they fork, once per executor worker instead of once per task.

Each Airflow task runs in a process forked from its executor's worker (the LocalExecutor's worker, or the Celery
worker's pool process). pandas, pyarrow, scikit-learn, MLflow (with its SQL stores' ORM models) and Great
Expectations take seconds to import, and tens of seconds on a loaded machine: paid per task, they dominated every
task's run time. Imported in the worker, every task process starts with them already in memory. Used by
:mod:`airloop.orchestration.executor` (LocalExecutor) and :mod:`airloop.orchestration.celery_config` (Celery).
"""

from __future__ import annotations

import importlib
import logging
import warnings

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
    query otherwise, in every task); one that fails is logged and left to the task to report. Also installs
    :mod:`airloop.orchestration.task_exit` (the supervisor sees a task's exit at once, not up to 5 s later)."""
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
