"""Data Docs render without internet: a validated batch's site, opened from disk in Chromium with every
network request refused, shows its validation results (GX's own pages are blank offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from airloop.data.datadocs import external_references, localize
from airloop.data.validate import validate_frame

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"
pytestmark = pytest.mark.slow  # a browser test: `make test` (which installs Chromium) runs it, test-fast does not


def test_data_docs_render_offline(tmp_path, page):
    site = tmp_path / "reports" / "data_docs" / "2026-01-01"
    suite = json.loads((DATA / "suite.json").read_text())
    outcome = validate_frame(pd.read_csv(DATA / "good.csv"), suite, docs_dir=str(site), batch_id="2026-01-01")
    assert outcome.data_docs, "GX built no Data Docs"
    assert external_references(site), "GX's pages load nothing from CDNs any more: this test no longer tests"

    assert localize(site) >= 2
    assert external_references(site) == []
    assert (site.parent / "_static" / "jquery.min.js").exists()

    requested, errors = [], []
    page.route("http*://**/*", lambda route: (requested.append(route.request.url), route.abort()))
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto((site / "index.html").as_uri())
    rows = page.locator("table tbody tr", has_text="airloop-batch")  # the validation results table
    rows.first.wait_for(timeout=30_000)
    assert rows.count() == 1, f"the index lists no validation result: {rows.all_inner_texts()}"
    assert requested == [] and errors == []

    result_page = next((site / "validations").rglob("*.html"))
    page.goto(result_page.as_uri())
    page.get_by_text("Overview").first.wait_for(timeout=30_000)
    assert requested == [] and errors == []
