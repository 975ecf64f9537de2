"""Defect 6: one bad YAML stops no pipeline. Cron, dates and estimator import paths are validated by the
config model (so ``airloop check`` catches them), and a failing file becomes the ``airloop_invalid_<file>``
DAG while every other pipeline's DAGs still load."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from airloop.config import PipelineConfigError, load_pipeline, parse_pipeline

_spec = importlib.util.spec_from_file_location(
    "dagbag_kit", Path(__file__).resolve().parents[1] / "dags" / "test_dagbag.py"
)
dagbag_kit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dagbag_kit)

BASE = {"name": "p", "source": {"uri": "file:///d/*.csv"}, "target": "y", "task": "classification"}
BAD = [
    ({"schedule": {"start_date": "01/02/2026"}}, "schedule.start_date", "a date like 2026-01-31"),
    ({"schedule": {"start_date": "2026-02-30"}}, "schedule.start_date", "a date like 2026-01-31"),
    ({"schedule": {"ingest": "every tuesday"}}, "schedule.ingest", "5-field cron"),
    ({"schedule": {"monitor": "61 * * * *"}}, "schedule.monitor", "5-field cron"),
    ({"training": {"candidates": [{"name": "x", "estimator": "os.system"}]}}, "training", "estimator_packages"),
    ({"training": {"candidates": [{"name": "x", "estimator": "sklearn.svm.SVC()"}]}}, "estimator", "import path"),
]


@pytest.mark.parametrize(("extra", "key", "message"), BAD, ids=[b[1] + ":" + str(i) for i, b in enumerate(BAD)])
def test_bad_schedule_and_import_paths_fail_the_check_naming_the_key(extra, key, message):
    with pytest.raises(PipelineConfigError, match=rf"(?s)p\.yaml: .*key '[^']*{key}[^']*': expected .*{message}"):
        parse_pipeline({**BASE, **extra}, "p.yaml")


def test_estimator_packages_extend_the_allow_list_without_importing_anything(tmp_path):
    marker = tmp_path / "imported"
    evil = tmp_path / "evilpkg"
    evil.mkdir()
    (evil / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nclass Est: pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        doc = {**BASE, "training": {"candidates": [{"name": "e", "estimator": "evilpkg.Est"}]}}
        with pytest.raises(PipelineConfigError, match="add 'evilpkg' there"):
            parse_pipeline(doc, "p.yaml")
        doc["training"]["estimator_packages"] = ["sklearn", "evilpkg"]
        assert parse_pipeline(doc, "p.yaml").training.estimator_packages == ["sklearn", "evilpkg"]
        assert not marker.exists(), "checking the config imported the estimator's module"
    finally:
        sys.path.remove(str(tmp_path))


def test_good_schedules_still_pass(tmp_path):
    cfg = parse_pipeline(
        {**BASE, "schedule": {"ingest": "0 6 * * 1-5", "monitor": "@weekly", "start_date": "2026-03-01"}}
    )
    assert cfg.schedule.ingest == "0 6 * * 1-5"
    (tmp_path / "p.yaml").write_text("name: p\nsource: {uri: 'file:///d'}\ntarget: y\ntask: regression\n")
    assert load_pipeline(tmp_path / "p.yaml").schedule.ingest == "@daily"


def test_a_bad_date_or_cron_in_one_file_leaves_every_other_pipeline_loading(tmp_path):
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "baddate.yaml").write_text(
        "name: baddate\nsource: {uri: 'file:///d'}\ntarget: y\ntask: regression\nschedule: {start_date: 01/02/2026}\n"
    )
    (folder / "badcron.yaml").write_text(
        "name: badcron\nsource: {uri: 'file:///d'}\ntarget: y\ntask: regression\nschedule: {ingest: every tuesday}\n"
    )
    (folder / "ok.yaml").write_text("name: fine\nsource: {uri: 'file:///d'}\ntarget: y\ntask: regression\n")
    out = dagbag_kit.parse(tmp_path, folder)
    assert out["errors"] == {}, "DAG files failed to import"
    assert {"airloop_invalid_baddate", "airloop_invalid_badcron"} <= set(out["dags"])
    assert {f"airloop_fine_{s}" for s in dagbag_kit.STAGES} <= set(out["dags"])
