"""Browser tests: Playwright drives Debian's Chromium (``make test`` installs it with apt when it is missing).

Nothing here skips: a missing browser fails the test with the command that installs it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("AIRLOOP_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser context and page per test."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    yield page
    context.close()


# A small closed loop run through Airflow (`airloop demo` on a light churn pipeline), then Airflow's api-server
# with the Airloop plugin and an MLflow server on it. Shared by every UI test of the session.
LIGHT_CHURN = {
    "training": {
        "n_iter": 1,
        "cv_folds": 2,
        "candidates": [
            {
                "name": "logistic_regression",
                "estimator": "sklearn.linear_model.LogisticRegression",
                "params": {"max_iter": 300},
            }
        ],
    },
    "evaluation": {"primary_metric": "roc_auc", "min_value": 0.6, "tolerance": 0.0, "bootstrap_resamples": 50},
}


@pytest.fixture(scope="session")
def airloop_ui(tmp_path_factory):
    """{"ui": uiserver.UI, "home", "env", "status" (`airloop status --json` after the run)}."""
    import json

    import yaml
    from fixtures.uiserver import REPO, airloop, airloop_env, start_ui

    root = tmp_path_factory.mktemp("airloop_ui")
    home, pipelines = root / "home", root / "pipelines"
    pipelines.mkdir()
    doc = yaml.safe_load((REPO / "include" / "pipelines" / "churn.yaml").read_text())
    doc.update(LIGHT_CHURN)
    (pipelines / "churn.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    env = airloop_env(home, AIRLOOP_PIPELINES_DIR=str(pipelines))
    demo = airloop(["demo", "--days", "2", "--drift-day", "2", "--daily-rows", "300", "--history-rows", "800"], env)
    assert demo.returncode == 0, f"demo failed:\n{demo.stdout[-3000:]}\n{demo.stderr[-3000:]}"
    status = airloop(["status", "--json"], env)
    assert status.returncode == 0, status.stderr[-3000:]
    ui = start_ui(home, root / "servers", env)
    try:
        yield {"ui": ui, "home": home, "env": ui.env, "status": json.loads(status.stdout), "demo": demo.stdout}
    finally:
        ui.stop()
