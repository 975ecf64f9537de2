"""The Airloop plugin for the Airflow UI (Airflow 3 plugin interface).

- An **Airloop** page in the navigation: one row per pipeline with the champion, the last gate verdict, drift
  and staleness, the last run of each DAG and pending approvals (``/airloop/``, an external view).
- On every task instance, extra-link buttons to the MLflow run, model version, model card, drift report and
  Data Docs that the task recorded, and an **Airloop** tab listing them (``/airloop/ti/...``).

The back end is :mod:`airloop.orchestration.ui` (a FastAPI app that checks Airflow's token on every route).
This file only declares; it lives directly under ``plugins/`` because ``plugins/.airflowignore`` keeps the
``airloop`` package itself out of Airflow's plugin scan.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airloop.orchestration.ui import PREFIX, create_app, evidence_link_classes


class AirloopPlugin(AirflowPlugin):
    name = "airloop"
    fastapi_apps = [{"app": create_app(), "url_prefix": PREFIX, "name": "Airloop"}]
    # Buttons on every task instance: MLflow run, model version, model card, drift report, Data Docs, profile
    global_operator_extra_links = [cls() for cls in evidence_link_classes()]
    external_views = [
        {
            "name": "Airloop",
            "href": f"{PREFIX}/",
            "destination": "nav",
            "url_route": "airloop",
            "nav_top_level": True,
        },
        {
            "name": "Airloop",
            "href": f"{PREFIX}/ti/{{DAG_ID}}/{{RUN_ID}}/{{TASK_ID}}?map_index={{MAP_INDEX}}",
            "destination": "task_instance",
            "url_route": "airloop_evidence",
        },
    ]
