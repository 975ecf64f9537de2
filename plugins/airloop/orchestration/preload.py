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
)


def preload() -> None:
    """Import the heavy modules, then configure the ORM mappers they declared (SQLAlchemy does that at the first
    query otherwise, in every task); one that fails is logged and left to the task to report."""
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
