"""A small champion for serving, trace and review tests, built through the real stages (no Airflow):
simulate → ingest → validate → plan → prepare → train (logistic regression) → register → promote."""

from __future__ import annotations

from pathlib import Path

from airloop.config import parse_pipeline
from airloop.demo.simulate import SimulationSpec, simulate

LR = {
    "name": "logistic_regression",
    "estimator": "sklearn.linear_model.LogisticRegression",
    "params": {"max_iter": 300},
}


# A raw churn row as a REST client sends it (one high-risk customer).
CHURN_ROW = {
    "tenure_months": 3,
    "monthly_charges": 95.5,
    "total_charges": 280.0,
    "support_calls": 5,
    "senior": 0,
    "contract": "month-to-month",
    "payment_method": "electronic_check",
    "internet_service": "fiber",
    "region": "north",
}


def churn_cfg(name: str, data_dir: Path, **overrides):
    """A churn pipeline reading the simulated files under ``data_dir``."""
    doc = {
        "name": name,
        "source": {"uri": f"file://{data_dir}/landing/churn_*.csv"},
        "labels": {"uri": f"file://{data_dir}/labels/labels_*.csv"},
        "target": "churned",
        "task": "classification",
        "id_column": "customer_id",
        "event_time_column": "event_time",
        "training": {"candidates": [LR], "cv_folds": 2, "n_iter": 1},
        "evaluation": {"bootstrap_resamples": 20},
    }
    doc.update(overrides)
    return parse_pipeline(doc, f"{name}.yaml")


def simulate_small(data_dir: Path, days: int = 2) -> dict:
    return simulate(data_dir, SimulationSpec(history_rows=600, daily_rows=200, days=days, drift_day=days + 1))


def ingest_validated(cfg, batch_id: str, run_info: dict | None = None) -> None:
    from airloop.data.ingest import ingest_batch
    from airloop.data.validate import validate_batch

    ingest_batch(cfg, batch_id, run_info=run_info)
    validate_batch(cfg, batch_id, run_info=run_info)


def train_version(cfg, batch_id: str, *, promote: bool = True, actor: str = "tester", seed: int | None = None) -> dict:
    """Train on every validated batch up to ``batch_id``, register, and (by default) promote; returns
    {"version", "run_id", "split"}."""
    from airloop.model.plan import plan_initial, prepare_training
    from airloop.model.train import train_candidate
    from airloop.store import registry
    from airloop.store.lake import Lake

    if seed is not None:
        cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"seed": seed})})
    lake = Lake(cfg.name)
    plan = plan_initial(cfg, lake, batch_id, force=True)
    split = prepare_training(cfg, lake, plan)
    run_info = {"dag_id": f"airloop_{cfg.name}_train", "run_id": f"manual__{batch_id}", "try_number": 1}
    result = train_candidate(cfg, "logistic_regression", split, run_info=run_info)
    version = registry.register(cfg, result["model_uri"], result["run_id"])
    if promote:
        registry.promote(cfg, version, reason="test", actor=actor)
    return {"version": version, "run_id": result["run_id"], "split": split}


class RunningServer:
    """``with RunningServer(app) as url:`` serves a FastAPI app with uvicorn on a free loopback port, in a
    thread, and stops it (running the app's shutdown) on exit."""

    def __init__(self, app, timeout_s: float = 30):
        self.app, self.timeout_s = app, timeout_s

    def __enter__(self) -> str:
        import threading
        import time

        import uvicorn
        from services import free_port

        self.port = free_port()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + self.timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{self.port} within {self.timeout_s} s")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=self.timeout_s)
