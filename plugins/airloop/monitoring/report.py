"""The drift report as one standalone HTML page: a summary, the features by PSI, and paired bars per feature.

``render_html(report, title, context)`` takes a :class:`airloop.monitoring.drift.DriftReport` and returns the
page: inline CSS and SVG, no scripts, no network, every value escaped.
"""

from __future__ import annotations

import html
import math
from typing import Any

from airloop.monitoring.drift import DriftReport, FeatureDrift

_STATUS_COLOR = {"ok": "#2e7d32", "warn": "#ef6c00", "alert": "#c62828"}
_REF_COLOR = "#9e9e9e"

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#212121}
h1{font-size:22px;margin:0 0 8px} h2{font-size:17px;margin:28px 0 8px}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600;font-size:13px}
.ok{background:#2e7d32}.warn{background:#ef6c00}.alert{background:#c62828}
table{border-collapse:collapse;font-size:13px} th,td{padding:4px 10px;border-bottom:1px solid #e0e0e0;
text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px;margin:8px 0}
dt{color:#616161} dd{margin:0} pre{background:#f5f5f5;padding:8px;font-size:12px;white-space:pre-wrap}
.plots{display:flex;flex-wrap:wrap;gap:16px} figure{margin:0;border:1px solid #e0e0e0;padding:8px}
figcaption{font-size:13px;margin-bottom:4px} .legend{font-size:12px;color:#616161}
"""


def render_html(
    report: DriftReport, title: str, context: dict[str, Any] | None = None, performance: dict[str, Any] | None = None
) -> str:
    """A self-contained HTML page (inline CSS and SVG, no scripts, no network) for one drift report.

    ``context`` is shown as key/value pairs under the title: pipeline, batch, model version, reference run.
    ``performance`` ({"estimate", "impact", "track", "realized"} from :mod:`airloop.monitoring.performance`)
    adds the estimated performance, per segment, and the estimates of earlier days beside their realized values.
    """
    esc = html.escape
    rows = sorted(report.features, key=lambda f: -f.psi)
    if report.prediction is not None:
        rows = [report.prediction, *rows]
    context_html = "".join(f"<dt>{esc(str(k))}</dt><dd>{esc(str(v))}</dd>" for k, v in (context or {}).items())
    table_rows = []
    for f in rows:
        label = f"{f.feature} (prediction)" if f is report.prediction else f.feature
        js = "" if f.js is None else _fmt(f.js, 3)
        table_rows.append(
            f"<tr><td>{esc(label)}</td><td>{f.kind}</td><td class='num'>{_fmt(f.psi, 3)}</td>"
            f"<td class='num'>{_fmt(f.psi_threshold, 3)}</td><td class='num'>{_fmt_p(f.psi_p_value)}</td>"
            f"<td>{f.test}</td><td class='num'>{_fmt(f.statistic, 3)}</td>"
            f"<td class='num'>{_fmt_p(f.p_value)}</td><td class='num'>{js}</td>"
            f"<td><span class='badge {f.status}'>{f.status}</span></td></tr>"
        )
    plots = "".join(
        f"<figure><figcaption>{esc(f.feature)} &middot; PSI {_fmt(f.psi, 3)} "
        f"<span class='badge {f.status}'>{f.status}</span></figcaption>{_bars_svg(f)}</figure>"
        for f in rows
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{esc(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{esc(title)} <span class="badge {report.status}">{report.status.upper()}</span></h1>
<dl>{context_html}<dt>rows</dt><dd>reference {report.n_reference}, current {report.n_current}</dd>
<dt>drifted</dt><dd>{len(report.drifted_features)} of {len(report.features)} features
({report.share_drifted:.0%})</dd></dl>
<pre>{esc(report.summary())}</pre>
{_performance_html(performance)}
<h2>Features by PSI</h2>
<table>
<tr><th>feature</th><th>kind</th><th>PSI</th><th>alerts at PSI</th><th>resampled p</th><th>test</th>
<th>statistic</th><th>p-value</th><th>JS</th><th>status</th></tr>
{"".join(table_rows)}
</table>
<h2>Distributions</h2>
<p class="legend"><svg width="10" height="10"><rect width="10" height="10" fill="{_REF_COLOR}"/></svg>
reference &nbsp; <svg width="10" height="10"><rect width="10" height="10" fill="#1565c0"/></svg> current
(bar color follows the status); bins are reference quantiles for numeric features.</p>
<div class="plots">{plots}</div>
</body>
</html>
"""


def _performance_html(performance: dict[str, Any] | None) -> str:
    """The estimated performance, per segment, and earlier estimates beside their realized values."""
    if not performance:
        return ""
    esc = html.escape
    est = performance.get("estimate")
    parts = ["<h2>Performance before labels</h2>", f"<p>{esc(performance.get('impact') or '')}</p>"]
    if est:
        parts.append(
            f"<dl><dt>method</dt><dd>{esc(str(est['method']).upper())} (calibration: "
            f"{esc(str(est.get('calibration')))})</dd><dt>estimated {esc(est['metric'])}</dt>"
            f"<dd>{_fmt(est['value'], 4)} (90% band {_fmt(est['lower'], 4)} to {_fmt(est['upper'], 4)})</dd>"
            f"<dt>champion holdout</dt><dd>{_fmt(est.get('reference_value'), 4)}</dd></dl>"
        )
        realized = (performance.get("realized") or {}).get("segments") or {}
        rows = [
            f"<tr><td>{esc(s['column'])}={esc(str(s['value']))}</td><td class='num'>{s['rows']}</td>"
            f"<td class='num'>{_fmt(s['estimate'], 4)}</td><td class='num'>"
            f"{_fmt(realized.get(s['column'] + '=' + str(s['value'])), 4)}</td>"
            f"<td>{'yes' if s['judged'] else 'no (too few rows)'}</td></tr>"
            for s in est.get("segments", [])
        ]
        if rows:
            parts.append(
                "<h3>Per segment</h3><table><tr><th>segment</th><th>rows</th><th>estimated</th>"
                "<th>realized</th><th>estimated?</th></tr>" + "".join(rows) + "</table>"
            )
    track = performance.get("track") or []
    if track:
        rows = [
            f"<tr><td>{esc(t['batch_id'])}</td><td class='num'>{_fmt(t['estimate'], 4)}</td>"
            f"<td class='num'>{_fmt(t['realized'], 4)}</td><td class='num'>{_fmt(t['error'], 4)}</td></tr>"
            for t in track
        ]
        parts.append(
            "<h3>Estimated and realized, by batch</h3><table><tr><th>batch</th><th>estimated</th>"
            "<th>realized</th><th>error</th></tr>" + "".join(rows) + "</table>"
        )
    return "\n".join(parts)


def _bars_svg(f: FeatureDrift, width: int = 380, height: int = 170) -> str:
    """Paired bars per bin, reference grey and current in the status color, labels under the axis."""
    n = len(f.bins)
    if n == 0:
        return ""
    top, bottom, left = 8, 60, 40  # room for the rotated bin labels below and to the left
    plot_h = height - top - bottom
    slot = (width - left) / n
    bar_w = max(slot * 0.38, 1.0)
    peak = max([*f.ref_share, *f.cur_share, 1e-9])
    cur_color = _STATUS_COLOR[f.status] if f.status != "ok" else "#1565c0"
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{html.escape(f.feature)}">']
    base = top + plot_h
    for i, (label, r, c) in enumerate(zip(f.bins, f.ref_share, f.cur_share, strict=True)):
        x = left + i * slot + slot * 0.1
        tip = html.escape(f"{label}: reference {r:.1%}, current {c:.1%}")
        for j, (share, color) in enumerate(((r, _REF_COLOR), (c, cur_color))):
            h = plot_h * share / peak
            parts.append(
                f'<rect x="{x + j * bar_w:.1f}" y="{base - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{color}"><title>{tip}</title></rect>'
            )
        short = label if len(label) <= 12 else label[:11] + "…"
        cx = left + (i + 0.5) * slot
        parts.append(
            f'<text x="{cx:.1f}" y="{base + 10}" font-size="9" text-anchor="end" '
            f'transform="rotate(-40 {cx:.1f} {base + 10})">{html.escape(short)}</text>'
        )
    parts.append(f'<line x1="{left}" y1="{base}" x2="{width}" y2="{base}" stroke="#757575"/></svg>')
    return "".join(parts)


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _fmt_p(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2g}"
