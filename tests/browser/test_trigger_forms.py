"""A person triggers DAGs from the Airflow UI's forms, leaving the optional fields empty as their help texts
allow, and the runs succeed (after `make demo`, on `make ui`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def login(page, ui) -> None:
    page.goto(f"{ui.url}/", timeout=120_000)
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", ui.password)
    page.click("button:has-text('Sign in')")
    page.wait_for_url(lambda u: "/auth/login" not in u, timeout=120_000)


def trigger_from_form(page, ui, dag_id: str, fill: dict[str, str]) -> dict:
    """Open the DAG's trigger form, fill only ``fill``, submit; returns the run the form created."""
    client = ui.client()
    before = {r["dag_run_id"] for r in client.runs(dag_id)}
    page.goto(f"{ui.url}/dags/{dag_id}", timeout=120_000)
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    for name, value in fill.items():
        dialog.locator(f"#element_{name}").fill(value)
    submit = dialog.get_by_role("button", name="Trigger")
    assert submit.is_enabled(), f"{dag_id}: the form's Trigger button is disabled with its optional fields empty"
    submit.click()
    for _ in range(120):
        new = [r for r in client.runs(dag_id) if r["dag_run_id"] not in before]
        if new:
            return client.wait(dag_id, new[0]["dag_run_id"], timeout_s=600)
        page.wait_for_timeout(1000)
    raise AssertionError(f"{dag_id}: submitting the form created no run")


SECOND_CHAMPION = """
from airloop.config import get_pipeline
from airloop.store import models, promotions, registry
cfg = get_pipeline("churn")
champ = registry.get_version(cfg, "champion")
mine = [r for r in promotions.promotion_log(cfg) if r["version"] == str(champ.version) and r["event"] == "promotion"]
if not (mine and mine[-1].get("previous")):
    # The demo kept its first champion: register the same model again and promote it, so there is a previous one.
    mv = registry._client().create_model_version(cfg.registered_model_name, champ.source, run_id=champ.run_id)
    models.bless(cfg.registered_model_name, str(mv.version), champ.run_id, champ.source)  # as the gate signs
    promotions.promote(cfg, str(mv.version), reason="browser test: a second champion", actor="test")
print(registry.get_version(cfg, "champion").version)
"""


def python_on(home, code: str) -> str:
    from fixtures.loopkit import clean_env

    proc = subprocess.run(
        [sys.executable, "-c", code], env=clean_env(home), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def test_validate_and_rollback_forms_submit_with_optional_fields_empty(page, demo_ui):
    champion_before = python_on(demo_ui.home, SECOND_CHAMPION)
    login(page, demo_ui)
    validate = trigger_from_form(page, demo_ui, "airloop_churn_validate", {})
    assert validate["state"] == "success", validate
    rollback = trigger_from_form(page, demo_ui, "airloop_churn_rollback", {"reason": "browser test: roll back"})
    assert rollback["state"] == "success", rollback
    record = demo_ui.client().xcom("airloop_churn_rollback", rollback["dag_run_id"], "rollback")
    assert record and record["event"] == "rollback" and str(record["version"]) != champion_before, record
