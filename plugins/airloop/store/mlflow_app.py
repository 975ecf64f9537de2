"""MLflow app plugins (entry-point group ``mlflow.app``) that open MLflow's UI in its *Model training* view.

``mlflow server|ui --app-name airloop`` (``make mlflow-ui``) and ``--app-name airloop-basic-auth`` (compose, with
MLflow's basic auth) serve MLflow's own app, except that ``index.html`` first presets the browser's view switch.
Why: MLflow 3.17's UI opens every experiment in the GenAI view (Traces) unless the URL says ``workflowType`` or
the browser remembers the switch (local-storage key ``mlflow.workflowType_v1``), and its server has no setting
for the default. Airloop's MLflow server holds only training experiments, so the training view is the right
default there; a browser that already holds a choice keeps it (docs/ui.md, "In MLflow").
"""

from __future__ import annotations

import json
from typing import Any

WORKFLOW_KEY = "mlflow.workflowType_v1"  # the UI's useLocalStorage({key: "mlflow.workflowType", version: 1})
WORKFLOW_VALUE = json.dumps("machine_learning")  # stored JSON-encoded: the UI JSON.parse()s what it reads
# Only when the key is absent: a person's own pick in the sidebar is kept. try/catch: storage may be disabled.
PRESET_SCRIPT = (
    f"<script>try{{var k={json.dumps(WORKFLOW_KEY)};"
    f"if(!localStorage.getItem(k))localStorage.setItem(k,{json.dumps(WORKFLOW_VALUE)})}}catch(e){{}}</script>"
)


def preset_training_view(app: Any) -> Any:
    """Replace the Flask ``app``'s ``serve`` view (MLflow's ``index.html``) by one that inserts
    :data:`PRESET_SCRIPT` right after ``<head>``; returns ``app``. Without the built page, MLflow's own view
    answers as before."""
    from pathlib import Path

    from flask import Response

    original = app.view_functions["serve"]
    index = Path(app.static_folder) / "index.html"

    def serve():
        html = index.read_text(encoding="utf-8") if index.exists() else ""
        if "<head>" not in html:
            return original()
        return Response(
            html.replace("<head>", "<head>" + PRESET_SCRIPT, 1),
            mimetype="text/html",
            headers={"Cache-Control": "no-cache"},
        )

    app.view_functions["serve"] = serve
    return app


def create_app() -> Any:
    """``--app-name airloop``: MLflow's server app with the training view preset; the FastAPI app under uvicorn
    (MLflow's default server), the Flask app under gunicorn or waitress."""
    from mlflow.environment_variables import _MLFLOW_SGI_NAME
    from mlflow.server import app

    preset_training_view(app)
    if _MLFLOW_SGI_NAME.get() == "uvicorn":
        from mlflow.server.fastapi_app import create_fastapi_app

        return create_fastapi_app(app)
    return app


def create_basic_auth_app() -> Any:
    """``--app-name airloop-basic-auth``: MLflow's ``basic-auth`` app (``mlflow.server.auth.create_app``, which
    picks FastAPI or Flask itself) with the training view preset."""
    from mlflow.server import app
    from mlflow.server.auth import create_app as basic_auth_app

    return basic_auth_app(preset_training_view(app))
