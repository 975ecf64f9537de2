"""MLflow experiments as users expect: model-development kind, candidates apart from validation and monitoring."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from airloop.config import parse_pipeline
from airloop.store import tracking


def cfg(name: str):
    return parse_pipeline(
        {"name": name, "source": {"uri": "file:///x/*.csv"}, "target": "y", "task": "classification"}, f"{name}.yaml"
    )


def test_each_purpose_has_its_own_experiment_of_the_training_kind(mlflow_store):
    client = MlflowClient(tracking_uri=tracking.configure_mlflow())
    ids = {purpose: tracking.ensure_experiment(cfg("kinds"), purpose) for purpose in ("training", "data", "monitoring")}
    assert len(set(ids.values())) == 3
    for purpose, exp_id in ids.items():
        exp = client.get_experiment(exp_id)
        assert exp.name == {"training": "airloop/kinds", "data": "airloop/kinds/data"}.get(
            purpose, "airloop/kinds/monitoring"
        )
        assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
        assert exp.tags["airloop.purpose"] == purpose
    with pytest.raises(ValueError, match="expected one of"):
        tracking.experiment_name(cfg("kinds"), "validate")


def test_an_experiment_made_before_the_kind_tag_gets_it(mlflow_store):
    client = MlflowClient(tracking_uri=tracking.configure_mlflow())
    old = client.create_experiment("airloop/old")
    assert "mlflow.experimentKind" not in client.get_experiment(old).tags
    assert tracking.ensure_experiment(cfg("old")) == old
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"


def _ui_bundle() -> str:
    """The installed MLflow UI's main JS bundle (what decides which view an experiment opens in)."""
    import mlflow

    build = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    mains = sorted(build.glob("main.*.js"))
    assert len(mains) == 1, f"{build}: expected one main.*.js, found {[m.name for m in mains]}"
    return mains[0].read_text(encoding="utf-8")


def test_the_view_values_airloop_sets_are_ones_mlflows_ui_accepts():
    """docs/ui.md: the link parameter and the kind tag must be values of the installed UI's own enums."""
    bundle = _ui_bundle()
    view = tracking.TRAINING_VIEW.removeprefix("?workflowType=")
    assert f'e.MACHINE_LEARNING="{view}"' in bundle
    assert f'e.CUSTOM_MODEL_DEVELOPMENT="{tracking.EXPERIMENT_KIND}"' in bundle
    # The switch is remembered per browser under this key, "genai" until a person picks otherwise.
    assert re.search(r'key:"mlflow\.workflowType",version:1,initialValue:\w+', bundle)
    assert 'e.GENAI="genai"' in bundle


def test_mlflows_ui_still_ignores_the_kind_tag_for_the_view():
    """docs/ui.md says no tag can make MLflow's own experiment list open the training view: the UI reads the
    ``mlflow.experimentKind`` tag only when a build flag is off, and this build fixes the flag on. When an
    MLflow upgrade changes that, this fails and the paragraph (and maybe the tag) must be revisited."""
    bundle = _ui_bundle()
    # const l=e=>{const{workflowType:t}=...,n=(0,s.Z0)();return useMemo(()=>n?m(t):(tag lookup)(e),...)}
    hook = re.search(
        r"\{const\{workflowType:\w+\}=\(0,\w+\.\w+\)\(\),\w+=\(0,(\w+)\.(\w+)\)\(\);"
        r'return\(0,\w+\.useMemo\)\(\(\)=>\w+\?\w+\(\w+\):\(e=>\{[^{}]*"mlflow\.experimentKind"',
        bundle,
    )
    assert hook, "MLflow's UI no longer picks the experiment kind from the workflow switch before the tag"
    module_var, flag_export = hook.groups()
    imported = re.search(rf"\b{module_var}=n\((\d+)\)", bundle[max(0, hook.start() - 400) : hook.start()])
    assert imported, f"import of {module_var} next to the kind hook"
    module = bundle[bundle.index(f"{imported.group(1)}(e,t,n){{") :][:20_000]
    local = re.search(rf"\b{flag_export}:\(\)=>(\w+)", module)
    assert local, f"export {flag_export} of module {imported.group(1)}"
    assert re.search(rf"[,;{{]{local.group(1)}=\(\)=>!0", module), "the flag is no longer fixed on"


def test_experiment_links_open_the_runs_tab_in_the_training_view_best_candidate_first(monkeypatch):
    """The runs tab itself (MLflow's redirect from a bare experiment drops the query), sorted by the holdout value
    of the primary metric the way the runs page reads it from the URL (docs/ui.md)."""
    monkeypatch.setenv("AIRLOOP_MLFLOW_UI_URL", "http://mlflow:5000/")
    base = "http://mlflow:5000/#/experiments/7/runs?workflowType=machine_learning"
    assert tracking.experiment_url("7") == base
    assert tracking.experiment_url("7", "roc_auc") == f"{base}&orderByKey=metrics.%60test_roc_auc%60&orderByAsc=false"
    assert tracking.experiment_url("7", "rmse").endswith("&orderByKey=metrics.%60test_rmse%60&orderByAsc=true")
