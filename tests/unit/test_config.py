from pathlib import Path

import pytest

from airloop.config import PipelineConfigError, get_pipeline, load_pipeline, load_pipelines

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_four_keys_are_enough(tmp_path):
    path = write(tmp_path, "sales.yaml", 'name: sales\nsource: {uri: "file:///d/*.csv"}\ntarget: y\ntask: regression\n')
    cfg = load_pipeline(path)
    assert cfg.primary_metric == "rmse"
    assert cfg.registered_model_name == "airloop-sales"
    assert cfg.training.cv_folds == 3 and cfg.monitoring.psi_alert == 0.25


def test_wrong_type_names_file_key_expected_and_found(tmp_path):
    path = write(
        tmp_path,
        "bad.yaml",
        'name: bad\nsource: {uri: "file:///d"}\ntarget: y\ntask: classification\ntraining: {n_iter: ten}\n',
    )
    with pytest.raises(PipelineConfigError) as err:
        load_pipeline(path)
    text = str(err.value)
    assert str(path) in text and "training.n_iter" in text and "'ten'" in text and "integer" in text


def test_unknown_key_and_missing_key(tmp_path):
    path = write(tmp_path, "bad.yaml", 'name: bad\nsource: {uri: "file:///d"}\ntask: classification\ntargte: y\n')
    with pytest.raises(PipelineConfigError) as err:
        load_pipeline(path)
    assert "key 'target': required, but missing" in str(err.value)
    assert "key 'targte': not a known key" in str(err.value)


def test_bad_task_value_lists_the_choices(tmp_path):
    path = write(tmp_path, "bad.yaml", 'name: bad\nsource: {uri: "file:///d"}\ntarget: y\ntask: clustering\n')
    with pytest.raises(PipelineConfigError, match="'classification' or 'regression'.*'clustering'"):
        load_pipeline(path)


def test_not_yaml_and_not_a_mapping(tmp_path):
    with pytest.raises(PipelineConfigError, match="not valid YAML"):
        load_pipeline(write(tmp_path, "a.yaml", "name: [unclosed\n"))
    with pytest.raises(PipelineConfigError, match="expected a mapping"):
        load_pipeline(write(tmp_path, "b.yaml", "- just\n- a list\n"))


def test_duplicate_names_and_unknown_pipeline(tmp_path):
    body = 'name: same\nsource: {uri: "file:///d"}\ntarget: y\ntask: regression\n'
    write(tmp_path, "a.yaml", body)
    write(tmp_path, "b.yaml", body)
    with pytest.raises(PipelineConfigError, match="already declared"):
        load_pipelines(tmp_path)
    with pytest.raises(PipelineConfigError, match="no pipeline named 'nope'"):
        get_pipeline("nope", REPO / "include" / "pipelines")


def test_env_vars_expand_in_source_uri(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_ROOT", "/srv/data")
    path = write(
        tmp_path, "e.yaml", 'name: e\nsource: {uri: "file://${DATA_ROOT}/x/*.csv"}\ntarget: y\ntask: regression\n'
    )
    assert load_pipeline(path).source.uri == "file:///srv/data/x/*.csv"


def test_every_shipped_pipeline_is_valid():
    pipelines = load_pipelines(REPO / "include" / "pipelines")
    assert "churn" in pipelines
    assert pipelines["churn"].evaluation.min_value == 0.70


def test_review_routing_keys_are_checked_against_the_task(tmp_path):
    base = 'name: r\nsource: {uri: "file:///d"}\ntarget: y\n'
    cfg = load_pipeline(write(tmp_path, "ok.yaml", base + "task: classification\nserving: {review_by: set_size}\n"))
    assert cfg.serving.review_by == "set_size" and cfg.serving.review_max_set_size == 1
    cases = [
        ("task: regression\nserving: {review_by: set_size}\n", "key 'serving.review_by': expected 'interval_width'"),
        (
            "task: classification\nserving: {review_by: interval_width, review_max_interval_width: 3}\n",
            "key 'serving.review_by': expected 'probability' or 'set_size' for a classification pipeline",
        ),
        (
            "task: regression\nserving: {review_by: interval_width}\n",
            "key 'serving.review_max_interval_width': expected a width in target units",
        ),
        ("task: classification\nserving: {review_by: entropy}\n", "key 'serving.review_by': expected 'probability'"),
    ]
    for i, (tail, message) in enumerate(cases):
        path = write(tmp_path, f"bad{i}.yaml", base + tail)
        with pytest.raises(PipelineConfigError) as err:
            load_pipeline(path)
        assert str(path) in str(err.value) and message in str(err.value), str(err.value)
