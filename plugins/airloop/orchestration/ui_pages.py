"""HTML of the Airloop plugin pages (see :mod:`airloop.orchestration.ui`): self-contained (no CDN), so they
render offline inside the Airflow UI's frame. Pure functions of the status document and references.

Links to Airflow pages open in the whole UI (``target=_top``); MLflow and reports open in a new tab. Airflow
sandboxes the frame (no popups, no top navigation), so a small script (:data:`FRAME_LINKS`) follows a clicked
link from the top document, which the frame may reach because it is served from the same origin.
"""

from __future__ import annotations

from html import escape
from typing import Any

from airloop.orchestration.evidence import LABELS
from airloop.store.tracking import experiment_url

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;font-size:14px;margin:16px;color:#1f2328}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:20px 0 6px}
.meta{color:#59636e;font-size:12px;margin-bottom:12px}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid #d1d9e0;padding:6px 8px;vertical-align:top;text-align:left}
th{background:#f6f8fa;font-weight:600} ul{margin:4px 0;padding-left:18px} li{margin:2px 0}
.ok{color:#1a7f37;font-weight:600} .bad{color:#cf222e;font-weight:600} .warn{color:#9a6700;font-weight:600}
.small{font-size:12px;color:#59636e} a{color:#0969da} code{font-size:12px}
@media (prefers-color-scheme: dark){body{background:#0d1117;color:#e6edf3} th{background:#161b22}
th,td{border-color:#30363d} a{color:#4493f8} .meta,.small{color:#9198a1}}
"""

FRAME_LINKS = """
document.addEventListener("click", function (event) {
  var link = event.target.closest("a[href]");
  if (!link || window.top === window || event.defaultPrevented) return;
  var top;
  try { top = window.top.document; } catch (err) { return; }
  event.preventDefault();
  var proxy = top.createElement("a");
  proxy.href = link.href;
  proxy.target = link.target === "_top" ? "_self" : "_blank";
  proxy.rel = "noopener";
  top.body.appendChild(proxy);
  proxy.click();
  proxy.remove();
});
"""

STATE_CLASS = {"success": "ok", "failed": "bad", "upstream_failed": "bad", "running": "warn", "queued": "warn"}


def _page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style><script>{FRAME_LINKS}</script></head><body>{body}</body></html>"
    )


def _a(href: str | None, text: str, *, top: bool = False, testid: str | None = None) -> str:
    if not href:
        return escape(text)
    target = "_top" if top else "_blank"
    tid = f' data-testid="{escape(testid)}"' if testid else ""
    return f'<a href="{escape(href)}" target="{target}" rel="noopener"{tid}>{escape(text)}</a>'


def _span(text: Any, testid: str, cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<span data-testid="{escape(testid)}"{klass}>{escape(str(text))}</span>'


def report_href(pipeline: str, lake_uri: str, uri: str | None) -> str | None:
    """The plugin URL serving a lake file under ``<lake_uri>/reports/``; None for anything else."""
    if not uri:
        return None
    prefix = lake_uri.rstrip("/") + "/reports/"
    if not uri.startswith(prefix):
        return None
    return f"/airloop/reports/{pipeline}/{uri[len(prefix) :]}"


def _metric(m: dict | None, testid: str) -> str:
    if not m:
        return ""
    where = m["measured_on"].split(" (")[0]
    value = _span(f"{m['value']:.4f}", testid)
    return (
        f"<li>{escape(m['metric'])} {value} "
        f'<span class="small" title="{escape(m["measured_on"])}">on {escape(where)}</span></li>'
    )


def _champion_cell(name: str, p: dict, mlflow: dict) -> str:
    champ = p.get("champion")
    if not champ:
        return '<span data-testid="champion-version">none yet</span>'
    exp = mlflow["training_id"]
    run_href = f"{mlflow['ui']}/#/experiments/{exp}/runs/{champ['run_id']}" if exp else None
    card = champ.get("model_card") or ""
    card_href = (
        f"{mlflow['ui']}/#/experiments/{exp}/runs/{champ['run_id']}/artifactPath/{card.split('/', 3)[-1]}"
        if card.startswith("runs:/") and exp
        else None
    )
    version_href = f"{mlflow['ui']}/#/models/{p['registered_model']}/versions/{champ['version']}"
    parts = [
        f"<b>{_a(version_href, 'v' + champ['version'], testid='champion-version')}</b>"
        f" {escape(champ.get('candidate') or '')}",
        "<ul>",
        _metric(champ.get("holdout"), "champion-holdout"),
        _metric(champ.get("cv"), "champion-cv"),
        "</ul>",
        f'<div class="small">promoted {escape(str(champ.get("promoted_at") or "-"))} by '
        f"{escape(str(champ.get('promoted_by') or '-'))}</div>",
        f"<div>{_a(run_href, 'training run', testid='champion-run')} · {_a(card_href, 'model card')}</div>",
    ]
    gate = champ.get("gate")
    if gate and gate.get("reasons"):
        reasons = "".join(f"<li>{escape(r)}</li>" for r in gate["reasons"])
        parts.append(f"<details><summary>why it won ({escape(gate['verdict'])})</summary><ul>{reasons}</ul></details>")
    return "".join(parts)


def _gate_cell(p: dict, mlflow: dict) -> str:
    gate = p.get("gate")
    if not gate:
        return "no gate verdict yet"
    cls = "ok" if gate.get("verdict") == "blessed" else "bad"
    exp = mlflow["training_id"]
    run_href = f"{mlflow['ui']}/#/experiments/{exp}/runs/{gate['run_id']}" if exp else None
    reasons = "".join(f"<li>{escape(r)}</li>" for r in gate.get("reasons", []))
    version = f" → v{gate['registered_version']}" if gate.get("registered_version") else ""
    return (
        f"{_span(gate.get('verdict', '?').upper(), 'gate-verdict', cls)} {escape(gate.get('candidate') or '')}"
        f"{escape(version)} ({_a(run_href, 'run')})<ul data-testid='gate-reasons'>{reasons}</ul>"
    )


def _drift_cell(name: str, p: dict) -> str:
    d = p.get("drift")
    if not d:
        return '<span data-testid="drift-status">not monitored yet</span>'
    cls = "bad" if d.get("confirmed") else ("warn" if d.get("status") == "alert" else "ok")
    confirmed = "confirmed" if d.get("confirmed") else "not confirmed"
    top = "".join(
        f"<li>{escape(f)} <span class='small'>PSI {v:.3f}</span></li>" for f, v in d.get("top_features") or []
    )
    href = report_href(name, p["lake_uri"], d.get("report_uri"))
    out = [
        f"{escape(d['batch_id'])}: {_span(d['status'], 'drift-status', cls)} ({escape(confirmed)})",
        f"<div class='small'>drifted: {escape(', '.join(d.get('drifted_features') or []) or '-')}</div>",
        f"<ul data-testid='drift-top'>{top}</ul>" if top else "",
        f"<div>{_a(href, 'drift report', testid='drift-report')}</div>",
    ]
    st = (p.get("champion") or {}).get("staleness")
    if st:
        last = f"{st['live'][-1][1]:.4f} on {st['live'][-1][0]}" if st.get("live") else "no labels yet"
        stale = f"stale since {st['stale_on']}" if st.get("stale_on") else "fresh"
        out.append(
            f"<div class='small' data-testid='staleness'>{escape(str(st['days_monitored']))} day(s) monitored; "
            f"{escape(str(st['live_metric']))} {escape(last)} (live); trend {escape(str(st.get('trend') or 'n/a'))}; "
            f"{escape(stale)}</div>"
        )
    return "".join(out)


def _runs_cell(p: dict) -> str:
    rows = []
    for stage, run in p.get("dag_runs", {}).items():
        if run is None:
            rows.append(f"<li>{escape(stage)}: <span class='small'>never ran</span></li>")
            continue
        href = f"/dags/{run['dag_id']}/runs/{run['run_id']}"
        cls = STATE_CLASS.get(run["state"], "")
        rows.append(
            f"<li>{_a('/dags/' + run['dag_id'], stage, top=True)}: "
            f"{_a(href, run['state'], top=True, testid='run-' + stage)} "
            f"<span class='small {cls}'>{escape(str(run.get('end') or run.get('start') or ''))[:19]}</span></li>"
        )
    return f"<ul>{''.join(rows)}</ul>"


def _ti_path(a: dict) -> str:
    return f"/dags/{a['dag_id']}/runs/{a['run_id']}/tasks/{a['task_id']}"


def _approvals_cell(p: dict) -> str:
    pending = p.get("approvals") or []
    if not pending:
        return '<span data-testid="approvals">none pending</span>'
    items = "".join(
        f"<li>{_a(_ti_path(a) + '/required_actions', a['subject'], top=True)}"
        f" <span class='small'>since {escape(str(a['requested_at'])[:19])}</span></li>"
        for a in pending
    )
    return f"<ul data-testid='approvals'>{items}</ul>"


def _links_cell(name: str, p: dict, mlflow: dict) -> str:
    ui = mlflow["ui"]
    links = []
    for purpose, label in (("training", "candidates"), ("data", "validation"), ("monitoring", "monitoring")):
        exp = (p.get("experiments") or {}).get(purpose) or {}
        if exp.get("id"):
            # Candidates best first on the holdout; validation and monitoring runs newest first (MLflow's default).
            url = experiment_url(exp["id"], p.get("primary_metric") if purpose == "training" else None)
            links.append(_a(url, f"MLflow: {label}", testid=f"mlflow-{purpose}"))
    links.append(_a(f"{ui}/#/models/{p['registered_model']}", "MLflow: registered model"))
    v = p.get("validation") or {}
    docs = report_href(name, p["lake_uri"], v.get("data_docs"))
    if docs:
        links.append(_a(docs, f"Data Docs ({v.get('batch_id')}, {v.get('verdict')})", testid="data-docs"))
    links.append(_a(f"/dags?tags=pipeline%3A{name}", "DAGs", top=True))
    return "<ul>" + "".join(f"<li>{link}</li>" for link in links) + "</ul>"


def _training_section(name: str, tasks: list[dict], mlflow_ui: str) -> str:
    if not tasks:
        return ""
    rows = []
    for t in tasks:
        ti_href = f"/dags/{t['dag_id']}/runs/{t['run_id']}/tasks/{t['task_id']}" + (
            f"/mapped/{t['map_index']}" if t["map_index"] >= 0 else ""
        )
        runs = [r["ref"] for r in t["refs"] if r["kind"] == "mlflow_run"]
        mlflow_link = _a(f"{mlflow_ui}/#/runs/{runs[0]}", runs[0], testid="training-mlflow-run") if runs else "-"
        rows.append(
            f"<tr><td>{_a(ti_href, t['dag_id'], top=True)}</td><td>{escape(t['run_id'])}</td>"
            f"<td>{escape(str(t['map_index']))}</td><td>{mlflow_link}</td></tr>"
        )
    return (
        f"<h2>{escape(name)}: latest training tasks</h2><table data-testid='training-{escape(name)}'>"
        "<tr><th>DAG</th><th>DAG run</th><th>candidate (map index)</th><th>MLflow run</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def status_page(doc: dict, training: dict[str, list[dict]]) -> str:
    """The Airloop page: one row per pipeline of the status document ``doc`` (docs/status.md), then each
    pipeline's latest training tasks with their MLflow runs."""
    from airloop.store.tracking import ui_url

    ui = ui_url()
    head = (
        "<h1>Airloop</h1>"
        f"<div class='meta'>generated {escape(doc['generated_at'][:19])} UTC · MLflow "
        f"{_a(ui, ui)} · lake <code>{escape(doc['lake_uri'])}</code> · "
        f"{_a('/airloop/status.json', 'status JSON')}. Metrics are named by where they were measured: holdout "
        "(frozen test split), CV (training split), live (scored batches with labels), recent window.</div>"
    )
    rows = []
    for name, p in doc["pipelines"].items():
        exp = (p.get("experiments") or {}).get("training") or {}
        mlflow = {"ui": ui, "training_id": exp.get("id")}
        rows.append(
            f"<tr data-pipeline='{escape(name)}'><td><b>{escape(name)}</b>"
            f"<div class='small'>{escape(p['registered_model'])}</div></td>"
            f"<td>{_champion_cell(name, p, mlflow)}</td><td>{_gate_cell(p, mlflow)}</td>"
            f"<td>{_drift_cell(name, p)}</td><td>{_runs_cell(p)}</td><td>{_approvals_cell(p)}</td>"
            f"<td>{_links_cell(name, p, mlflow)}</td></tr>"
        )
    table = (
        "<table data-testid='pipelines'><tr><th>pipeline</th><th>champion</th><th>last gate verdict</th>"
        "<th>drift and staleness</th><th>last run of each DAG</th><th>pending approvals</th><th>links</th></tr>"
        + "".join(rows)
        + "</table>"
    )
    if not rows:
        table = "<p>No pipelines: add a YAML file under include/pipelines/ (see docs/pipelines.md).</p>"
    sections = "".join(_training_section(name, training.get(name, []), ui) for name in doc["pipelines"])
    return _page("Airloop", head + table + sections)


def task_page(dag_id: str, run_id: str, task_id: str, map_index: int, refs: list[dict], links: dict) -> str:
    """The evidence of one task instance: one link per recorded reference (``links``: kind+ref -> URL)."""
    title = f"{dag_id} / {run_id} / {task_id}" + (f" [{map_index}]" if map_index >= 0 else "")
    if not refs:
        body = (
            f"<h1>Airloop evidence</h1><div class='meta'>{escape(title)}</div>"
            "<p data-testid='no-evidence'>This task recorded no MLflow run, model version or report.</p>"
        )
        return _page("Airloop evidence", body)
    items = []
    for ref in refs:
        label = LABELS.get(ref["kind"], ref["kind"])
        batch = f" ({ref['batch_id']})" if ref.get("batch_id") else ""
        href = links.get((ref["kind"], ref["ref"]))
        items.append(
            f"<li>{_a(href, label + batch, testid='evidence-' + ref['kind'])} <code>{escape(ref['ref'])}</code></li>"
        )
    body = f"<h1>Airloop evidence</h1><div class='meta'>{escape(title)}</div><ul>{''.join(items)}</ul>"
    return _page("Airloop evidence", body)
