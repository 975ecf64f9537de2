"""kill -9 of training: the champion does not move, no version appears, the data it read is unchanged and
no temporary object is left in the lake."""

from __future__ import annotations

import hashlib
import signal

from fixtures.faultkit import champion, run_child
from fixtures.servekit import churn_cfg, ingest_validated, simulate_small, train_version

from airloop.store import lake as lk
from airloop.store.lake import Lake

KILL_IN_TRAIN = """
import os, signal
from fixtures.servekit import churn_cfg
from airloop.model import train
from airloop.model.plan import prepare_initial
from airloop.store.lake import Lake


def dying(*args, **kwargs):  # the estimator is fitted; the process dies while logging it
    os.kill(os.getpid(), signal.SIGKILL)


train.log_sklearn_model = dying
cfg = churn_cfg("killtrain", __import__("pathlib").Path({data!r}))
lake = Lake(cfg.name)
split = prepare_initial(cfg, lake, {batch!r}, force=True)
train.train_candidate(cfg, "logistic_regression", split)
"""


def _digests(lake: Lake) -> dict[str, str]:
    return {
        u: hashlib.sha256(lk.read_bytes(u)).hexdigest()
        for z in ("raw", "validated")
        for u in lk.list_uris(lake.zone(z))
    }


def test_kill_9_during_training_changes_nothing(mlflow_store, tmp_path):
    from mlflow.tracking import MlflowClient

    written = simulate_small(tmp_path / "data", days=1)
    cfg = churn_cfg("killtrain", tmp_path / "data")
    batch = written["history_day"]
    ingest_validated(cfg, batch)
    v1 = train_version(cfg, batch)["version"]
    lake = Lake(cfg.name)
    before = _digests(lake)
    child = run_child(KILL_IN_TRAIN.format(data=str(tmp_path / "data"), batch=batch))
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    assert champion(cfg) == v1
    versions = MlflowClient().search_model_versions(f"name='{cfg.registered_model_name}'")
    assert [str(v.version) for v in versions] == [v1], "a killed training registered a version"
    assert _digests(lake) == before, "raw or validated bytes changed"
    assert lk.temporaries(lake.root) == []
