"""`mlflow server|ui --app-name airloop`: MLflow's own page, presetting the training view in a browser that has
no choice yet (docs/ui.md, "In MLflow"). The browser side is tests/browser/test_mlflow_view.py."""

from __future__ import annotations

import json
import re
import sys
import types
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from airloop.store import mlflow_app

REPO = Path(__file__).resolve().parents[3]
APPS = {
    "airloop": "airloop.store.mlflow_app:create_app",
    "airloop-basic-auth": "airloop.store.mlflow_app:create_basic_auth_app",
}


def test_mlflow_finds_airloops_apps_and_every_server_command_uses_one():
    found = {ep.name: ep.value for ep in entry_points(group="mlflow.app")}
    assert {name: found.get(name) for name in APPS} == APPS, "run `uv sync` so the entry points are registered"
    # Every `--app-name` that starts an MLflow server of Airloop's names an app that exists.
    for path in ("Makefile", "docker-compose.yaml", "tests/fixtures/uiserver.py", "tests/integration/topology.py"):
        names = re.findall(r'--app-name[=\s",]+([\w-]+)', (REPO / path).read_text())
        assert names and set(names) <= set(APPS), f"{path}: --app-name {names}, expected one of {sorted(APPS)}"


@pytest.fixture
def mlflow_server_app(mlflow_store, monkeypatch):
    """MLflow's Flask app as `mlflow server` imports it (tracking store: the module's SQLite file), its
    original index view restored afterwards."""
    monkeypatch.delenv("_MLFLOW_SGI_NAME", raising=False)
    from mlflow.server import app

    monkeypatch.setitem(app.view_functions, "serve", app.view_functions["serve"])
    return app


def _js_string(snippet: str, after: str) -> str:
    """The JavaScript string literal that follows ``after`` in ``snippet``, decoded (it is JSON)."""
    literal = re.match(r'"(?:[^"\\]|\\.)*"', snippet[snippet.index(after) + len(after) :])
    assert literal, f"no string literal after {after!r} in {snippet!r}"
    return json.loads(literal.group(0))


def test_index_html_presets_the_training_view_unless_the_browser_chose(mlflow_server_app):
    from flask import Flask

    app = next(ep for ep in entry_points(group="mlflow.app") if ep.name == "airloop").load()()
    assert isinstance(app, Flask)
    served = app.test_client().get("/")
    assert served.status_code == 200 and served.mimetype == "text/html"
    html = served.get_data(as_text=True)
    index = (Path(app.static_folder) / "index.html").read_text(encoding="utf-8")
    # The script runs first (right after <head>, before MLflow's bundle) and the page is otherwise MLflow's.
    assert html.index("<head>") + len("<head>") == html.index("<script>") < html.index("static-files/static/js")
    assert html.replace(mlflow_app.PRESET_SCRIPT, "", 1) == index
    script = html[html.index("<script>") : html.index("</script>")]
    # The key the UI reads, and the value it JSON.parse()s into "machine_learning"; set only when absent.
    assert _js_string(script, "var k=") == "mlflow.workflowType_v1"
    assert json.loads(_js_string(script, "localStorage.setItem(k,")) == "machine_learning"
    assert "if(!localStorage.getItem(k))localStorage.setItem(" in script
    assert app.test_client().get("/health").status_code == 200


def test_under_uvicorn_the_app_is_mlflows_fastapi_app(mlflow_server_app, monkeypatch):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    monkeypatch.setenv("_MLFLOW_SGI_NAME", "uvicorn")  # what `mlflow server` sets for its default server
    app = mlflow_app.create_app()
    assert isinstance(app, FastAPI)
    assert mlflow_app.PRESET_SCRIPT in TestClient(app, base_url="http://localhost").get("/").text


def test_the_basic_auth_app_is_mlflows_on_the_preset_page(mlflow_server_app, monkeypatch):
    """MLflow's basic-auth factory gets the patched app (its own module needs Flask-WTF, which only the image
    installs, so it is stood in for here)."""
    given = []
    fake = types.ModuleType("mlflow.server.auth")
    fake.create_app = lambda app: given.append(app) or "basic-auth app"
    monkeypatch.setitem(sys.modules, "mlflow.server.auth", fake)
    assert mlflow_app.create_basic_auth_app() == "basic-auth app"
    assert given == [mlflow_server_app]
    assert mlflow_app.PRESET_SCRIPT in given[0].test_client().get("/").get_data(as_text=True)
