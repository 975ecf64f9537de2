"""The human-readable form of the ``airloop status`` document.

In: the document of :func:`airloop.monitoring.status.collect` (its JSON form is docs/status.md). Out: text, a
block per pipeline: champion and staleness, last gate verdict, pending approvals, the last run of each stage
DAG, drift, the estimate before labels, retrains and earlier champions.
"""

from __future__ import annotations


def render(doc: dict) -> str:
    """The human-readable form of :func:`collect`."""
    lines = [f"MLflow: {doc['tracking_uri']}", f"Lake:   {doc['lake_uri']}", ""]
    for name, p in doc["pipelines"].items():
        champ = p["champion"]
        lines.append(f"pipeline {name}  (model {p['registered_model']})")
        if champ:
            metrics = "; ".join(
                f"{m['metric']} {m['value']:.4f} on {m['measured_on'].split(' (')[0]}"
                for m in (champ.get("holdout"), champ.get("cv"))
                if m
            )
            lines.append(
                f"  champion  v{champ['version']} ({champ['candidate']}), promoted {champ['promoted_at']}"
                f" by {champ['promoted_by']}; {metrics}"
            )
            st = champ.get("staleness")
            if st:
                last = f"{st['live'][-1][1]:.4f} on {st['live'][-1][0]}" if st["live"] else "no labels yet"
                lines.append(
                    f"  staleness {st['days_monitored']} day(s) monitored; {st['live_metric']} {last}, trend "
                    f"{st['trend'] or 'n/a'}"
                    + (f" ({st['trend_per_day']:+.4f}/day)" if st["trend_per_day"] is not None else "")
                    + (
                        f"; stale on {st['stale_on']} after {st['days_to_stale']} day(s)"
                        if st["stale_on"]
                        else "; fresh"
                    )
                )
        else:
            lines.append("  champion  none yet")
        gate = p.get("gate")
        if gate:
            lines.append(
                f"  gate      {gate['verdict']}: candidate {gate['candidate']} (run {gate['run_id']})"
                + (f", registered v{gate['registered_version']}" if gate.get("registered_version") else "")
            )
            lines += [f"            {r}" for r in gate["reasons"]]
        for a in p.get("approvals") or []:
            lines.append(f"  approval  pending since {a['requested_at']}: {a['subject']} ({a['dag_id']} {a['run_id']})")
        for stage, run in p["dag_runs"].items():
            lines.append(f"  {stage:9} " + (f"{run['state']:8} {run['run_id']}" if run else "never ran"))
        d = p["drift"]
        if d:
            feats = ", ".join(d["drifted_features"][:5]) or "-"
            if d.get("top_features"):
                feats += "; largest PSI: " + ", ".join(f"{f} {v:.3f}" for f, v in d["top_features"][:3])
            lines.append(f"  drift     {d['batch_id']}: {d['status']} (confirmed: {d['confirmed']}); features: {feats}")
            lines.append(f"            report: {d['report_uri']}")
        else:
            lines.append("  drift     not monitored yet")
        e = p.get("estimated_performance")
        if e and e["value"] is not None:
            realized = [t for t in e["by_batch"] if t["realized"] is not None]
            last = f"; last realized {realized[-1]['realized']:.4f} on {realized[-1]['batch_id']}" if realized else ""
            lines.append(
                f"  estimate  {e['batch_id']}: {e['metric']} {e['value']:.4f} ({e['method']}, holdout "
                f"{e['holdout_value'] if e['holdout_value'] is None else round(e['holdout_value'], 4)}){last}; "
                f"retrain: {e['retrain']} ({e['reason']})"
            )
        lines.append(f"  retrains  {len(p['retrains'])}")
        for h in p.get("staleness") or []:
            if champ and h["model_version"] == champ["version"]:
                continue
            lines.append(
                f"  earlier   v{h['model_version']}: served {h['first_batch']}..{h['last_batch']}, "
                + (f"stale after {h['days_to_stale']} day(s) ({h['stale_reason']})" if h["stale_on"] else "never stale")
            )
        lines.append("")
    return "\n".join(lines)
