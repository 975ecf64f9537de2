"""Data validation with Great Expectations (GX Core 1.x): the gate between staged and validated data.

:func:`validate_batch` runs the pipeline's suite (:mod:`airloop.data.suites`) on a staged batch in an ephemeral
GX context, moves the batch to ``validated/`` or ``quarantine/``, and records the verdict in the manifest and
MLflow. A critical failure quarantines the batch; a warning is recorded and the batch passes.

GX is imported inside the functions: importing it takes seconds, and ``import airloop.data.validate`` should not.
"""

from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs as pafs

from airloop.config import PipelineConfig
from airloop.data.failures import add_type_share, exception_message, failure_from_result
from airloop.data.suites import (
    CRITICAL,
    WARNING,
    columns_of,
    default_suite_refusals,
    load_suite,
    quiet_gx,
    severity_of,
    suite_path,
)
from airloop.errors import BadInput
from airloop.store.lake import (
    Lake,
    delete,
    exists,
    filesystem,
    join,
    read_json,
    read_parquet,
    write_json,
    write_parquet,
)

_BATCH_SIZE_EXPECTATIONS = ("expect_table_row_count_", "expect_column_values_to_be_unique")


class BatchQuarantined(BadInput):
    """A batch failed a critical expectation and was moved to quarantine; the message says why and where.

    ``result`` is the dict :func:`validate_batch` would have returned. A ``ValueError`` (via ``BadInput``):
    retrying cannot help, the data or the suite must change.
    """

    def __init__(self, message: str, result: dict | None = None):
        super().__init__(message)
        self.result = result or {}


@dataclass
class ValidationOutcome:
    """What one validation run found. ``success`` means no critical expectation failed."""

    success: bool
    critical: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    evaluated: int = 0
    data_docs: str | None = None
    suite_name: str = ""
    batch_id: str = ""

    @property
    def verdict(self) -> str:
        """``passed``, ``passed_with_warnings`` or ``failed``."""
        if not self.success:
            return "failed"
        return "passed_with_warnings" if self.warnings else "passed"

    def summary(self) -> str:
        """A readable multi-line block: the verdict, then one line per failed expectation."""
        subject = f"batch {self.batch_id}" if self.batch_id else "frame"
        verdict = self.verdict.replace("_", " ").upper()
        lines = [
            f"Validation of {subject} against suite '{self.suite_name}': {verdict} "
            f"({self.evaluated} expectations, {len(self.critical)} critical failures, "
            f"{len(self.warnings)} warnings)"
        ]
        lines += [f"  {describe_failure(f, CRITICAL)}" for f in self.critical]
        lines += [f"  {describe_failure(f, WARNING)}" for f in self.warnings]
        if self.data_docs:
            lines.append(f"  Data Docs: {self.data_docs}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the outcome, with its verdict."""
        return {**asdict(self), "verdict": self.verdict}


def describe_failure(failure: dict, severity: str) -> str:
    """One line for a failed expectation: ``CRITICAL expect_... on column 'x': 12.5% of rows failing``."""
    text = f"{severity.upper()} {failure['expectation']}"
    if failure.get("column") is not None:
        text += f" on column '{failure['column']}'"
    pct = failure.get("unexpected_percent")
    details = failure.get("details") or ""
    if pct is not None:
        text += f": {pct:.3g}% of rows failing" + (f" ({details})" if details else "")
    elif details:
        text += f": {details}"
    return text


# --- running GX --------------------------------------------------------------------------------------------


def _gx_context(docs_dir: str | None) -> Any:
    """An ephemeral (in-memory) GX context, no analytics or progress bars, with a local Data Docs site."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {}
    if docs_dir:
        sites["local_site"] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def validate_frame(
    frame: pd.DataFrame, suite: dict, *, docs_dir: str | None = None, batch_id: str = ""
) -> ValidationOutcome:
    """Run a suite (GX 1.x JSON dict) on a frame; with ``docs_dir`` (a local folder), build Data Docs there.

    Bookkeeping columns (``_`` prefix) are not shown to GX. Returns a :class:`ValidationOutcome`; its
    ``data_docs`` is the path of ``index.html`` when Data Docs were built.
    """
    with quiet_gx():
        import great_expectations as gx
        from great_expectations.checkpoint import UpdateDataDocsAction

    name = suite.get("name") or "airloop"
    gx_suite = copy.deepcopy(suite)
    gx_suite["name"] = name
    for exp in gx_suite.get("expectations", []):
        severity = severity_of(exp)
        exp["meta"] = {**(exp.get("meta") or {}), "severity": severity}
        exp["severity"] = severity  # GX's own field, so its Data Docs show the same severity
    data = frame[[c for c in frame.columns if not str(c).startswith("_")]]

    with quiet_gx():
        context = _gx_context(docs_dir)
        batch_definition = (
            context.data_sources.add_pandas("airloop")
            .add_dataframe_asset(name="batch")
            .add_batch_definition_whole_dataframe("whole")
        )
        expectation_suite = context.suites.add(gx.ExpectationSuite(**gx_suite))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(
                name=f"{name}-{batch_id or 'frame'}", data=batch_definition, suite=expectation_suite
            )
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"airloop-{name}",
                validation_definitions=[definition],
                actions=[UpdateDataDocsAction(name="data_docs")] if docs_dir else [],
                result_format={"result_format": "SUMMARY"},
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": data})

    critical, warnings, evaluated = [], [], 0
    for run_result in result.run_results.values():
        for r in run_result.results:
            evaluated += 1
            if r.success:
                continue
            config = r.expectation_config
            failure = failure_from_result(
                config.type, dict(config.kwargs), dict(r.result or {}), exception_message(r.exception_info)
            )
            add_type_share(failure, dict(config.kwargs), data)
            (warnings if (config.meta or {}).get("severity") == WARNING else critical).append(failure)
    index = Path(docs_dir) / "index.html" if docs_dir else None
    return ValidationOutcome(
        success=not critical,
        critical=critical,
        warnings=warnings,
        evaluated=evaluated,
        data_docs=str(index) if index is not None and index.exists() else None,
        suite_name=name,
        batch_id=batch_id,
    )


def check_scoring_frame(cfg: PipelineConfig, frame: pd.DataFrame) -> ValidationOutcome:
    """Validate a frame about to be scored with the pipeline's suite, minus the target's expectations and the
    batch-size ones (a scoring request may be one row).

    Catches training/serving skew (a missing feature, an unseen category) before predictions are made.
    """
    suite = load_suite(cfg, list(map(str, frame.columns)))
    kept = [
        e
        for e in suite["expectations"]
        if cfg.target not in columns_of(e) and not e.get("type", "").startswith(_BATCH_SIZE_EXPECTATIONS)
    ]
    return validate_frame(frame, {**suite, "expectations": kept})


# --- the stage ---------------------------------------------------------------------------------------------


def _local_path(uri: str) -> str | None:
    """The local folder of a ``file://`` URI; None for object stores."""
    fs, path = filesystem(uri)
    return path if isinstance(fs, pafs.LocalFileSystem) else None


class NotQuarantined(BadInput):
    """A replay was asked for a batch that is not in quarantine."""


def validate_batch(
    cfg: PipelineConfig,
    batch_id: str,
    *,
    lake: Lake | None = None,
    run_info: dict | None = None,
    replay: bool = False,
    track: bool = True,
) -> dict:
    """Validate the staged batch; move it to ``validated/`` or ``quarantine/`` and record it in the manifest
    and (with ``track``) as a small MLflow run (tags and metrics: verdict, failures, warnings).

    With ``replay`` the batch must be in quarantine: it is revalidated with the current suite from its staged
    copy (or, if that is gone, its quarantined copy) and, if it passes, moves to ``validated/`` like a clean
    batch. Returns ``{"batch_id", "verdict", "uri", "rows", "warnings", "data_docs", "replayed", "summary"}``
    (``summary``: the readable block the DAG task ends its log with). Raises :class:`BatchQuarantined` (after
    writing the quarantine copy and the manifest) on a critical failure.
    """
    lake = lake or Lake(cfg.name)
    staged_uri = lake.part("staged", batch_id)
    quarantined_uri = lake.part("quarantine", batch_id)
    if replay and not exists(quarantined_uri):
        where = "validated" if exists(lake.part("validated", batch_id)) else "neither validated nor quarantined"
        raise NotQuarantined(
            f"replay of batch {batch_id} of pipeline '{cfg.name}': expected a quarantined batch at "
            f"{quarantined_uri}, found none (the batch is {where}); replay only revalidates quarantined batches"
        )
    if not exists(staged_uri) and replay:
        staged_uri = quarantined_uri
    elif not replay:
        lake.require_part("staged", batch_id, "validate")
    frame = read_parquet(staged_uri)
    suite = load_suite(cfg, list(map(str, frame.columns)))

    docs_uri = lake.report("data_docs", batch_id)
    docs_dir = _local_path(docs_uri)
    if docs_dir:
        delete(docs_uri)  # a rerun replaces the batch's Data Docs instead of piling up old runs
    # On an s3:// lake there is no local folder to build into; Data Docs are skipped (the verdict and the
    # failures still go to the manifest and the task log). Uploading a built site is a possible follow-up.
    outcome = validate_frame(frame, suite, docs_dir=docs_dir, batch_id=batch_id)
    if not suite_path(cfg).exists():  # the default suite: refuse what it cannot express
        first = not [b for b in lake.batches("validated") if b != batch_id]
        refusals = default_suite_refusals(cfg, frame, first_batch=first)
        outcome.critical += refusals
        outcome.success = outcome.success and not refusals
    if docs_dir and outcome.data_docs:
        from airloop.data.datadocs import localize

        localize(Path(docs_dir))  # GX's pages load their scripts from CDNs: point them at local copies
    docs_index = join(docs_uri, "index.html") if outcome.data_docs else None
    outcome.data_docs = docs_index  # report the lake URI, as every other Airloop path

    passed = outcome.success
    verdict = outcome.verdict if passed else "quarantined"
    out_uri = lake.part("validated" if passed else "quarantine", batch_id)
    write_parquet(out_uri, frame)
    delete(lake.part("quarantine" if passed else "validated", batch_id))  # one copy per batch, ever

    manifest_uri = lake.manifest(batch_id)
    manifest = read_json(manifest_uri) if exists(manifest_uri) else {"batch_id": batch_id, "pipeline": cfg.name}
    if manifest.get("validation"):  # earlier verdicts (a quarantine before a replay) stay on record
        manifest.setdefault("validation_history", []).append(manifest["validation"])
    path = suite_path(cfg)
    manifest["validation"] = {
        "replay": replay,
        "verdict": verdict,
        "critical": outcome.critical,
        "warnings": outcome.warnings,
        "evaluated": outcome.evaluated,
        "rows": len(frame),
        "suite": outcome.suite_name,
        "suite_file": str(path) if path.exists() else None,
        "uri": out_uri,
        "data_docs": docs_index,
        "run_info": run_info or {},
        "validated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    # The verdict is on record before anything that needs MLflow: a tracking server that is down cannot
    # leave the batch without one.
    write_json(manifest_uri, manifest)
    if track:
        manifest["validation"]["mlflow_run_id"] = record_in_mlflow(cfg, batch_id, manifest["validation"], run_info)
        write_json(manifest_uri, manifest)

    result = {
        "batch_id": batch_id,
        "verdict": verdict,
        "uri": out_uri,
        "rows": len(frame),
        "warnings": len(outcome.warnings),
        "data_docs": docs_index,
        "mlflow_run_id": manifest["validation"].get("mlflow_run_id"),
        "replayed": replay,
        "summary": f"{'Replay: ' if replay else ''}Read {staged_uri} ({len(frame)} rows); verdict {verdict}; "
        f"wrote {out_uri}\n" + outcome.summary(),
    }
    if not passed:
        failures = "\n".join(f"  - {describe_failure(f, CRITICAL)}" for f in outcome.critical)
        raise BatchQuarantined(
            f"batch {batch_id} of pipeline '{cfg.name}' quarantined: {len(outcome.critical)} critical "
            f"expectation(s) of suite '{outcome.suite_name}' failed:\n{failures}\n"
            f"All {len(frame)} rows kept in {out_uri}. "
            f"Data Docs: {docs_index or 'not built (object-store lake)'}",
            result,
        )
    return result


def _metric_key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-/ ]", "_", text)[:250]


def record_in_mlflow(cfg: PipelineConfig, batch_id: str, validation: dict, run_info: dict | None) -> str:
    """One small MLflow run per validation (no artifacts): tags for the verdict and lineage, metrics for
    rows, failures, and the share of rows failing each failed expectation. Returns the run id."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    from airloop.store import tracking

    experiment_id = tracking.ensure_experiment(cfg, "data")
    client = MlflowClient()
    tags = {
        **tracking.lineage_tags(run_info),
        "airloop.stage": "validate",
        tracking.RUN_TYPE_TAG: "validation",
        "airloop.batch_id": batch_id,
        "airloop.verdict": validation["verdict"],
        "airloop.replay": str(validation.get("replay", False)).lower(),
        "airloop.suite": validation.get("suite") or "",
    }
    for i, warning in enumerate(validation["warnings"]):
        tags[f"airloop.warning.{i}"] = describe_failure(warning, WARNING)[:5000]
    for i, failure in enumerate(validation["critical"]):
        tags[f"airloop.critical.{i}"] = describe_failure(failure, CRITICAL)[:5000]
    run = client.create_run(experiment_id, run_name=f"validate {batch_id}", tags=tags)
    now = int(datetime.now(UTC).timestamp() * 1000)
    metrics = {
        "rows": validation["rows"],
        "expectations": validation["evaluated"],
        "critical_failures": len(validation["critical"]),
        "warnings": len(validation["warnings"]),
    }
    for severity in (CRITICAL, WARNING):
        for f in validation[severity if severity == CRITICAL else "warnings"]:
            if f.get("unexpected_percent") is not None:
                key = f"{severity}.{f.get('column') or 'table'}.{f['expectation']}.unexpected_percent"
                metrics[_metric_key(key)] = f["unexpected_percent"]
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        tags=[RunTag("airloop.validated_uri", validation["uri"])],
    )
    client.set_terminated(run.info.run_id, "FINISHED" if validation["verdict"] != "quarantined" else "FAILED")
    return run.info.run_id
