"""What an operator sees in the Airflow and MLflow UIs after a small loop (see the ``airloop_ui`` fixture):
the Airloop page behind Airflow's login, a task's evidence tab and its MLflow link, MLflow's training view.

Every check compares the UI with ``airloop status --json`` or with what MLflow recorded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest
from fixtures.uiserver import ADMIN

DOCS = Path(__file__).resolve().parents[2] / "docs"
pytestmark = pytest.mark.slow


def login(page, ui) -> None:
    page.goto(f"{ui.airflow_url}/", timeout=120_000)
    page.fill("input[name=username]", ADMIN, timeout=120_000)
    page.fill("input[name=password]", ui.password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{ui.airflow_url}/", timeout=120_000)


def screenshot(page, name: str, tmp_path: Path) -> Path:
    """A PNG of the page under tmp_path, and in docs/ when AIRLOOP_SCREENSHOTS=1 (how docs/ui-*.png are made)."""
    out = (DOCS if os.environ.get("AIRLOOP_SCREENSHOTS") == "1" else tmp_path) / name
    page.screenshot(path=str(out))
    assert out.stat().st_size > 10_000, f"{out}: screenshot looks empty"
    return out


def test_anonymous_and_forged_requests_are_refused(airloop_ui):
    ui = airloop_ui["ui"]
    champion = airloop_ui["status"]["pipelines"]["churn"]["champion"]
    for path in (
        "/airloop/",
        "/airloop/status.json",
        f"/airloop/ti/airloop_churn_train/x/train_candidate?map_index=0&v={champion['run_id']}",
        "/airloop/reports/churn/drift/x.html",
    ):
        anonymous = httpx.get(f"{ui.airflow_url}{path}", timeout=60)
        assert anonymous.status_code == 401, f"{path}: anonymous request answered {anonymous.status_code}"
        assert champion["run_id"] not in anonymous.text
        forged = httpx.get(f"{ui.airflow_url}{path}", headers={"Authorization": "Bearer not-a-jwt"}, timeout=60)
        assert forged.status_code in (401, 403), f"{path}: forged token answered {forged.status_code}"
    with pytest.raises(RuntimeError, match="expected 201"):
        ui.token(password="wrong")


def test_plugin_status_json_is_airloop_status(airloop_ui):
    ui, cli = airloop_ui["ui"], airloop_ui["status"]["pipelines"]["churn"]
    got = httpx.get(
        f"{ui.airflow_url}/airloop/status.json", headers={"Authorization": f"Bearer {ui.token()}"}, timeout=120
    )
    assert got.status_code == 200, got.text[:500]
    web = got.json()["pipelines"]["churn"]
    for key in ("registered_model", "experiments", "gate", "validation", "approvals", "drift"):
        assert web[key] == cli[key], key
    assert web["champion"]["version"] == cli["champion"]["version"]
    assert web["champion"]["holdout"] == cli["champion"]["holdout"]
    assert {s: (r or {}).get("run_id") for s, r in web["dag_runs"].items()} == {
        s: (r or {}).get("run_id") for s, r in cli["dag_runs"].items()
    }


def test_airloop_page_shows_the_status_behind_the_login(airloop_ui, page, tmp_path):
    ui, churn = airloop_ui["ui"], airloop_ui["status"]["pipelines"]["churn"]
    login(page, ui)
    page.goto(f"{ui.airflow_url}/plugin/airloop", timeout=120_000)
    frame = page.frame_locator("iframe")
    row = frame.locator("tr[data-pipeline=churn]")
    row.wait_for(timeout=120_000)

    champion = churn["champion"]
    assert row.locator("[data-testid=champion-version]").inner_text() == f"v{champion['version']}"
    assert row.locator("[data-testid=champion-holdout]").inner_text() == f"{champion['holdout']['value']:.4f}"
    assert "on holdout" in row.inner_text() and "on CV" in row.inner_text()
    gate = churn["gate"]
    assert row.locator("[data-testid=gate-verdict]").inner_text() == gate["verdict"].upper()
    reasons = row.locator("[data-testid=gate-reasons] li").all_inner_texts()
    assert reasons == gate["reasons"] and any("one-sided 95%" in r or "no champion" in r for r in reasons)
    drift = churn["drift"]
    assert row.locator("[data-testid=drift-status]").inner_text() == drift["status"]
    top = row.locator("[data-testid=drift-top] li").all_inner_texts()
    assert [t.split(" PSI")[0] for t in top] == [f for f, _ in drift["top_features"]]
    for stage, run in churn["dag_runs"].items():
        if run:
            link = row.locator(f"[data-testid=run-{stage}]")
            assert link.inner_text() == run["state"]
            assert link.get_attribute("href") == f"/dags/{run['dag_id']}/runs/{run['run_id']}"
    assert row.locator("[data-testid=approvals]").inner_text() == "none pending" and churn["approvals"] == []
    training = churn["experiments"]["training"]["id"]
    assert row.locator("[data-testid=mlflow-training]").get_attribute("href") == (  # best holdout first
        f"{ui.mlflow_url}/#/experiments/{training}/runs?workflowType=machine_learning"
        "&orderByKey=metrics.%60test_roc_auc%60&orderByAsc=false"
    )
    screenshot(page, "ui-airloop-page.png", tmp_path)

    # Links work from inside Airflow's sandboxed frame: MLflow opens in a new tab, Airflow pages in the UI.
    with page.context.expect_page(timeout=60_000) as opened:
        row.locator("[data-testid=champion-run]").click()
    assert opened.value.url.startswith(ui.mlflow_url) and opened.value.url.endswith(f"/runs/{champion['run_id']}")
    opened.value.close()
    train = churn["dag_runs"]["train"]
    row.locator("[data-testid=run-train]").click()
    page.wait_for_url(f"{ui.airflow_url}/dags/{train['dag_id']}/runs/{train['run_id']}", timeout=120_000)
    page.go_back()

    # The drift report opens from the page, served through the plugin (also without a file:// path).
    report = frame.locator("[data-testid=drift-report]").get_attribute("href")
    assert report == f"/airloop/reports/churn/drift/{drift['batch_id']}.html"
    shown = page.context.request.get(f"{ui.airflow_url}{report}")
    assert shown.status == 200 and "Drift report" in shown.text()


def test_a_training_task_links_to_its_mlflow_run(airloop_ui, page, tmp_path):
    """Airflow UI → the train DAG's candidate task → Details → its "MLflow run" extra link → the MLflow run it
    logged; the task's Airloop tab lists the same."""
    ui, churn = airloop_ui["ui"], airloop_ui["status"]["pipelines"]["churn"]
    train = churn["dag_runs"]["train"]
    login(page, ui)
    ti = f"{ui.airflow_url}/dags/{train['dag_id']}/runs/{train['run_id']}/tasks/train_candidate/mapped/0"
    page.goto(f"{ti}/details", timeout=120_000)
    link = page.get_by_role("link", name="MLflow run")  # the task's extra link (Details tab)
    link.wait_for(timeout=120_000)
    run_id = link.get_attribute("href").rsplit("/", 1)[-1]

    # The link is what the task recorded: the MLflow run tagged with this very DAG run and map index.
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=ui.env["MLFLOW_TRACKING_URI"]).get_run(run_id)
    assert run.data.tags["airflow.dag_id"] == train["dag_id"]
    assert run.data.tags["airflow.run_id"] == train["run_id"]
    assert run.data.tags["airflow.map_index"] == "0"
    assert run.data.tags["airloop.run_type"] == "candidate"

    with page.context.expect_page(timeout=60_000) as opened:
        link.click()
    mlflow_page = opened.value
    mlflow_page.wait_for_load_state("domcontentloaded", timeout=120_000)
    assert mlflow_page.url.startswith(ui.mlflow_url) and run_id in mlflow_page.url
    mlflow_page.get_by_text(run.info.run_name).first.wait_for(timeout=120_000)
    mlflow_page.close()

    # The task's Airloop tab lists the same evidence.
    page.goto(f"{ti}/plugin/airloop_evidence", timeout=120_000)
    tab = page.frame_locator("iframe").locator("[data-testid=evidence-mlflow_run]")
    tab.wait_for(timeout=120_000)
    assert tab.get_attribute("href").endswith(f"/runs/{run_id}")
    screenshot(page, "ui-task-evidence.png", tmp_path)


def test_mlflow_opens_candidates_in_the_training_view(airloop_ui, page):
    """Every Airloop experiment is of the model-development kind; the training experiment holds only candidates,
    validation and monitoring runs have their own experiments."""
    from mlflow.tracking import MlflowClient

    ui, churn = airloop_ui["ui"], airloop_ui["status"]["pipelines"]["churn"]
    client = MlflowClient(tracking_uri=ui.env["MLFLOW_TRACKING_URI"])
    # Optuna trials are nested under their candidate; the feasibility study goes with the data.
    expected = {
        "training": ({"candidate"}, {"candidate", "trial"}),
        "data": ({"validation"}, {"validation", "feasibility", "profile"}),
        "monitoring": ({"monitoring"}, {"monitoring"}),
    }
    for purpose, (required, allowed) in expected.items():
        exp_id = churn["experiments"][purpose]["id"]
        exp = client.get_experiment(exp_id)
        assert exp.tags.get("mlflow.experimentKind") == "custom_model_development", exp.name
        runs = client.search_runs([exp_id], max_results=500)
        found = {r.data.tags.get("airloop.run_type") for r in runs}
        assert required <= found <= allowed, (exp.name, found)
        top = [r for r in runs if not r.data.tags.get("mlflow.parentRunId")]
        if purpose == "training":
            assert {r.data.tags.get("airloop.run_type") for r in top} == {"candidate"}, "candidates on top"

    # MLflow's own experiment list, in this fresh browser context, opens the experiment in the training view:
    # the server is `mlflow server --app-name airloop` (store/mlflow_app.py), as `make mlflow-ui` runs it.
    exp_id = churn["experiments"]["training"]["id"]
    page.goto(f"{ui.mlflow_url}/#/experiments", timeout=120_000)
    page.get_by_role("link", name=churn["experiment"], exact=True).first.click(timeout=240_000)
    page.wait_for_url(re.compile(rf"#/experiments/{exp_id}/runs\b"), timeout=120_000)
    page.get_by_text("train-logistic_regression").first.wait_for(timeout=240_000)

    # The Airloop page's "MLflow: candidates" link opens the training view (MLflow 3.17 reads the view from the
    # URL, never from the kind tag) listing the candidate runs and nothing else.
    from airloop.store.tracking import TRAINING_VIEW

    page.goto(f"{ui.mlflow_url}/#/experiments/{exp_id}/runs{TRAINING_VIEW}", timeout=120_000)
    page.get_by_text("train-logistic_regression").first.wait_for(timeout=240_000)
    assert "workflowType=machine_learning" in page.url and "/runs" in page.url
    body = page.inner_text("body")
    assert "Token Usage" not in body and "validate " not in body and "monitor-" not in body
