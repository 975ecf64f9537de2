"""A date without data is a clean skip: every DAG ends skipped with a one-line reason, emits no Asset event
and shows no traceback or internal path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

RUN = textwrap.dedent(
    """
    import json, sys
    from airloop.orchestration.runner import Runner
    runner = Runner()
    out = {}
    for stage in sys.argv[1].split(","):
        r = runner.run(f"airloop_houses_{stage}", conf={"batch_id": "2026-11-30"})
        out[stage] = {"state": r.state, "tasks": r.tasks, "skips": r.skips, "refusals": r.refusals}
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import func, select
    with create_session() as session:
        out["asset_events"] = session.scalar(select(func.count()).select_from(AssetEvent))
    print(json.dumps(out))
    """
)


def test_a_date_without_data_skips_every_dag_without_asset_events(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "houses_2026-11-29.csv").write_text("sqft,city,price\n1200,lyon,250000\n")  # another day only
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "houses.yaml").write_text(
        f'name: houses\nsource: {{uri: "{data.as_uri()}/houses_*.csv"}}\ntarget: price\ntask: regression\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW", "AIRLOOP"))}
    env.update(
        AIRLOOP_HOME=str(tmp_path / "home"), AIRLOOP_PIPELINES_DIR=str(pipelines), PYTHONPATH=str(REPO / "plugins")
    )
    stages = ["ingest", "validate", "score", "monitor", "train"]
    proc = subprocess.run(
        [sys.executable, "-c", RUN, ",".join(stages)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.pop("asset_events") == 0, "a skipped DAG emitted an Asset event"
    for stage in stages:
        run = out[stage]
        assert run["state"] == "success", (stage, run)
        assert run["refusals"] == {}, (stage, run)
        assert run["tasks"] and set(run["tasks"].values()) == {"skipped"}, (stage, run)
        reasons = list(run["skips"].values())
        assert len(reasons) == 1, (stage, run)
        reason = reasons[0]
        assert "\n" not in reason and "Traceback" not in reason, (stage, reason)
        assert str(tmp_path / "home") not in reason and "part-0.parquet" not in reason, (stage, reason)
    assert "2026-11-30" in out["ingest"]["skips"]["ingest"]
    assert "no data was ingested" in out["validate"]["skips"]["validate"]
    assert "nothing to score" in out["score"]["skips"]["score"]
    assert "nothing to monitor" in out["monitor"]["skips"]["monitor"]
