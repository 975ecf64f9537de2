"""Model cards: one Markdown page per evaluated model (intended use, data, metrics, slices, gate verdict,
lineage), logged as ``model_card.md`` on the model's MLflow run and, for a registered version, set as the
version's description with a tag ``airloop.model_card`` pointing at the artifact.
"""

from __future__ import annotations

from typing import Any

from airloop.config import PipelineConfig

DESCRIPTION_LIMIT = 4900  # MLflow's SQL stores keep at most 5000 characters of a version description
CARD_PATH = "model_card.md"


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines


def render(cfg: PipelineConfig, run: Any, verdict: dict[str, Any]) -> str:
    """The card of the model trained in ``run`` (an MLflow Run), judged by ``verdict``
    (:func:`airloop.model.evaluate.evaluate_challenger`). Returns Markdown."""
    tags, params = run.data.tags, run.data.params
    version = verdict.get("version")
    who = f"{cfg.registered_model_name} v{version}" if version else f"{cfg.registered_model_name} candidate"
    metric = verdict["metric"]
    lines = [f"# Model card: {who}", ""]
    lines += [
        "## Intended use",
        "",
        f"{cfg.description or 'No description in the pipeline YAML.'}",
        "",
        f"- Task: {cfg.task}, predicting `{cfg.target}` for one row of the pipeline `{cfg.name}`"
        + (f" (entity `{cfg.id_column}`)" if cfg.id_column else "")
        + ".",
        f"- Decision metric: `{metric}`; minimum acceptable value: {fmt(cfg.evaluation.min_value)}; "
        f"tolerance against the champion: {cfg.evaluation.tolerance:g}; slice tolerance: "
        f"{cfg.evaluation.slice_tolerance:g}.",
        "- Scores raw rows with the training columns (missing values and unseen categories are handled).",
        "- Not for: rows from another population than the training data, or use after drift is confirmed "
        "without a retrain (the monitor DAG watches for that).",
        "",
        "## Model",
        "",
        f"- Candidate `{tags.get('airloop.candidate', '?')}`: `{params.get('estimator', '?')}`, serialized with "
        f"{tags.get('airloop.serialization', '?')}.",
        f"- Parameters: {', '.join(f'{k}={v}' for k, v in sorted(params.items()) if k not in _BOOKKEEPING) or '-'}",
        f"- Search: {params.get('search', 'random')}, {params.get('n_iter', '?')} draws, "
        f"{params.get('cv_folds', '?')}-fold CV, seed "
        f"{params.get('seed', '?')}.",
        "",
        "## Data",
        "",
        f"- Training rows: {params.get('n_train', '?')} from `{tags.get('airloop.train_uri', '?')}`",
        f"- Frozen holdout: {params.get('n_test', '?')} rows from `{verdict.get('holdout_uri')}` "
        f"({tags.get('airloop.split', '?')} split)",
        f"- Data fingerprint (sha256): `{tags.get('airloop.data_fingerprint', '?')}`",
        "",
        "## Metrics (frozen holdout, and CV where named)",
        "",
    ]
    cv = run.data.metrics.get(f"cv_{metric}")
    rows = [[k, v, "holdout"] for k, v in sorted(verdict.get("metrics", {}).items())]
    if cv is not None:
        rows.insert(0, [metric, cv, f"CV ({params.get('cv_folds', '?')}-fold, training split)"])
    lines += _table(["metric", "value", "measured on"], rows)
    from airloop.model.gate import describe_interval  # here: the card's other users (registry) need no pandas

    base = verdict.get("baseline")
    if base:
        shown = describe_interval(base.get("lower_bound"), base.get("interval_90"))
        lines += [
            "",
            f"Against the trivial baseline ({base['kind']}) on the same holdout: {metric} "
            f"{fmt(verdict['challenger_metric'])} vs {fmt(base['value'])}; improvement {fmt(base['improvement'])}; "
            f"{shown}. The gate's rule: the one-sided 95% lower bound must be above 0.",
        ]
    if verdict.get("champion_metric") is not None:
        shown = describe_interval(verdict.get("lower_bound"), verdict.get("interval_90"))
        lines += [
            "",
            f"Against champion v{verdict['champion_version']} on the same holdout: {metric} "
            f"{fmt(verdict['challenger_metric'])} vs {fmt(verdict['champion_metric'])}; improvement "
            f"{fmt(verdict.get('improvement'))}; {shown}. The gate's rule: the one-sided 95% lower bound must "
            f"be above -tolerance ({cfg.evaluation.tolerance:g}).",
        ]
    window = verdict.get("production_window")
    if window and "skipped" not in window:
        lines += [
            "",
            f"Recent window (latest labeled production rows: {window['rows']} rows, {', '.join(window['batches'])}): "
            f"{metric} {fmt(window['challenger'])} vs champion {fmt(window['champion'])}.",
        ]
    lines += ["", "## Uncertainty (conformal)", ""]
    c = verdict.get("conformal")
    if c and "coverage_measured" in c:
        from airloop.model.conformal import describe

        kind = (
            "prediction set: every class with probability >= 1 - threshold"
            if cfg.task == "classification"
            else ("interval: prediction +- threshold")
        )
        lines += [
            f"- {describe(c)}.",
            f"- A served row's {kind}.",
        ]
    else:
        from airloop.model.conformal import describe

        lines.append(f"- {describe(c)}.")
    lines += ["", "## Explanations (SHAP)", ""]
    ex = verdict.get("explanations") or {"skipped": "not computed"}
    if "skipped" in ex:
        lines.append(f"- {ex['skipped']}.")
    else:
        lines += [
            f"Mean |SHAP value| per raw column on {ex['rows']} holdout rows ({ex['explainer']} explainer; one-hot "
            "columns summed into their raw column). Plot: `explanations/shap_importance.png`.",
            "",
        ]
        lines += _table(
            ["feature", "mean abs SHAP", "mean SHAP"],
            [[d["feature"], d["mean_abs_shap"], d["mean_shap"]] for d in ex["top"]],
        )
    lines += ["", "## Slices", ""]
    slices = [s for s in verdict.get("slices", []) if not s.get("missing")]
    if slices:
        lines += _table(
            ["segment", "value", "rows", metric, "champion", "improvement", "judged"],
            [
                [s["column"], s["value"], s["rows"], s["challenger"], s["champion"], s["improvement"], s["judged"]]
                for s in slices
            ],
        )
    else:
        lines.append("No `segment_columns` declared in the pipeline YAML.")
    lines += [
        "",
        f"## Gate verdict: {'BLESSED' if verdict['blessed'] else 'REJECTED'}",
        "",
        *[f"- {r}" for r in verdict.get("reasons", [])],
        "",
        f"Full verdict: `{verdict.get('verdict_uri')}`.",
        "",
        "## Lineage",
        "",
        f"- MLflow run: [{run.info.run_id}]({verdict.get('run_url')})",
        f"- Code: git `{tags.get('airloop.git_sha', '?')}`, uv.lock sha256 `{tags.get('airloop.uv_lock_sha256', '?')}`",
        f"- Airflow: dag `{tags.get('airflow.dag_id', '-')}`, run `{tags.get('airflow.run_id', '-')}`, try "
        f"{tags.get('airflow.try_number', '-')}",
        f"- Plots: {', '.join(f'`{p}`' for p in verdict.get('plots', [])) or '-'}",
        "",
    ]
    return "\n".join(lines)


_BOOKKEEPING = {"candidate", "estimator", "cv_folds", "n_iter", "search", "seed", "n_train", "n_test"}


def publish(client: Any, cfg: PipelineConfig, run: Any, verdict: dict[str, Any]) -> str:
    """Log the card to the run (``model_card.md``) and, when a version was registered, make it the version's
    description and tag ``airloop.model_card``. Returns the artifact URI."""
    card = render(cfg, run, verdict)
    run_id = run.info.run_id
    client.log_text(run_id, card, CARD_PATH)
    uri = f"runs:/{run_id}/{CARD_PATH}"
    version = verdict.get("version")
    if version:
        name = cfg.registered_model_name
        description = card
        if len(description) > DESCRIPTION_LIMIT:
            description = card[: DESCRIPTION_LIMIT - 80] + f"\n\n(truncated; the full card is `{uri}`)\n"
        client.update_model_version(name, str(version), description=description)
        client.set_model_version_tag(name, str(version), "airloop.model_card", uri)
    return uri


LIVE_HEADING = "## Live: estimated and realized performance"


def live_section(metric: str, track: list[dict[str, Any]], impact: str) -> str:
    """The card's live section: per monitored batch, the estimate made before its labels and the realized value
    once they arrived (:func:`airloop.monitoring.performance.estimation_track`), and the last impact line."""
    lines = [LIVE_HEADING, "", f"Latest: {impact}", ""]
    lines += _table(
        ["batch", f"estimated {metric}", "band", "realized", "error"],
        [
            [
                t["batch_id"],
                t["estimate"],
                "-" if t.get("lower") is None else f"{t['lower']:.3f} to {t['upper']:.3f}",
                t["realized"],
                t["error"],
            ]
            for t in track[-14:]
        ],
    )
    return "\n".join(lines) + "\n"


def with_live_section(description: str | None, section: str) -> str:
    """``description`` (a card) with its live section replaced by ``section``, kept within DESCRIPTION_LIMIT."""
    base = (description or "").split(LIVE_HEADING)[0].rstrip()
    room = DESCRIPTION_LIMIT - len(section) - 2
    if len(base) > room:
        base = base[: max(room - 40, 0)] + "\n\n(card truncated)"
    return f"{base}\n\n{section}"
