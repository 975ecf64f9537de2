"""MLflow's own pages (`mlflow server --app-name airloop`, what `make mlflow-ui` runs) open Airloop's experiments in
the training view in a browser that never chose a view, and keep the choice of one that did (docs/ui.md)."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.slow  # a browser test: `make test` (which installs Chromium) runs it, test-fast does not
KEY = "mlflow.workflowType_v1"
NAMES = ("train-hist_gradient_boosting", "train-logistic_regression")


@pytest.fixture(scope="module")
def mlflow_ui(tmp_path_factory):
    """(the running server's uiserver.UI, the id of experiment "airloop/view" holding two finished candidates)."""
    from fixtures.uiserver import start_mlflow
    from mlflow.tracking import MlflowClient

    home = tmp_path_factory.mktemp("mlflow_view")
    (home / "mlflow").mkdir()
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    exp = client.create_experiment("airloop/view", artifact_location=(home / "mlflow" / "artifacts").as_uri())
    # The better candidate is the older one: MLflow's default order (newest first) shows it last.
    for started_ms, name, holdout in zip((1, 2), NAMES, (0.9, 0.8), strict=True):
        run = client.create_run(exp, started_ms, run_name=name, tags={"airloop.run_type": "candidate"})
        client.log_metric(run.info.run_id, "test_roc_auc", holdout)
        client.set_terminated(run.info.run_id)
    ui = start_mlflow(home, home / "server")
    try:
        yield ui, exp
    finally:
        ui.stop()


def test_mlflows_experiment_list_opens_the_training_view(mlflow_ui, page):
    """A fresh browser context, MLflow's experiment list → the experiment (a link without workflowType): the Runs
    tab of the training view (for the GenAI view MLflow redirects to Overview, as the next test shows)."""
    ui, exp = mlflow_ui
    page.goto(f"{ui.mlflow_url}/#/experiments", timeout=120_000)
    link = page.get_by_role("link", name="airloop/view").first
    link.wait_for(timeout=120_000)
    assert "workflowType" not in link.get_attribute("href")
    link.click()
    page.wait_for_url(re.compile(rf"#/experiments/{exp}/runs"), timeout=120_000)
    page.get_by_text("train-logistic_regression").first.wait_for(timeout=120_000)
    assert page.evaluate(f"localStorage.getItem('{KEY}')") == '"machine_learning"'


def test_a_browsers_own_choice_of_view_is_kept(mlflow_ui, page):
    ui, exp = mlflow_ui
    page.goto(f"{ui.mlflow_url}/", timeout=120_000)
    page.evaluate(f"localStorage.setItem('{KEY}', JSON.stringify('genai'))")  # what MLflow's switch stores
    page.goto(f"{ui.mlflow_url}/#/experiments/{exp}", timeout=120_000)
    page.reload(timeout=120_000)
    page.wait_for_url(re.compile(rf"#/experiments/{exp}/(overview|traces)"), timeout=120_000)
    assert page.evaluate(f"localStorage.getItem('{KEY}')") == '"genai"'


def test_airloops_link_lists_the_candidates_best_first(mlflow_ui, page, monkeypatch):
    """`tracking.experiment_url` with the primary metric: best holdout value first (MLflow's own order, newest
    first, puts the better, older candidate last)."""
    from airloop.store import tracking

    ui, exp = mlflow_ui
    monkeypatch.setenv("AIRLOOP_MLFLOW_UI_URL", ui.mlflow_url)
    rows = page.locator("[role=row][row-index]")

    def first_row(url: str) -> str:
        page.goto(url, timeout=120_000)
        page.reload(timeout=120_000)
        rows.filter(has_text="train-logistic_regression").first.wait_for(timeout=120_000)
        return next(name for name in NAMES if rows.filter(has_text=name).first.get_attribute("row-index") == "0")

    assert first_row(tracking.experiment_url(exp)) == "train-logistic_regression"
    assert first_row(tracking.experiment_url(exp, "roc_auc")) == "train-hist_gradient_boosting"
