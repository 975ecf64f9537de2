"""Data validation with Great Expectations (GX Core 1.x): the gate between staged and validated data.

A pipeline's suite is the reviewed JSON ``<suites_dir>/<pipeline>.json`` when it exists, else a default built
from the config. Each expectation's ``meta.severity`` is ``"critical"`` (the default) or ``"warning"``: a
critical failure quarantines the batch, a warning is recorded and the batch passes. Columns whose names start
with ``_`` are Airloop's bookkeeping; suites never check them.

GX is imported inside the functions: importing it takes seconds, and ``import airloop.data.validate`` should not.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs as pafs

from airloop.config import PipelineConfig
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

CRITICAL = "critical"
WARNING = "warning"
SEVERITIES = (CRITICAL, WARNING)
_DETAILS_MAX_CHARS = 160
_BATCH_SIZE_EXPECTATIONS = ("expect_table_row_count_", "expect_column_values_to_be_unique")


class SuiteError(BadInput):
    """An expectation suite that cannot be used; the message names the file and the expectation."""


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


# --- suites ------------------------------------------------------------------------------------------------


def suite_path(cfg: PipelineConfig) -> Path:
    """Where the reviewed suite of a pipeline lives: ``<suites_dir>/<name>.json``."""
    from airloop.settings import suites_dir

    return suites_dir() / f"{cfg.name}.json"


@contextlib.contextmanager
def _quiet_gx() -> Iterator[None]:
    """GX logs at INFO on import (hundreds of lines) and at every step; keep only its warnings, for one call."""
    logger = logging.getLogger("great_expectations")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _expectation(type_: str, severity: str = CRITICAL, **kwargs: Any) -> dict:
    return {"type": type_, "kwargs": kwargs, "meta": {"severity": severity}}


def default_suite(cfg: PipelineConfig, columns: list[str]) -> dict:
    """A suite built from the config: schema checks on target, id, event time and features, and rows >= 1."""
    exps = []
    if cfg.labels is None:
        # The target is expected inline, but a batch may still arrive before its labels: warn, do not block.
        exps.append(_expectation("expect_column_to_exist", WARNING, column=cfg.target))
    if cfg.id_column:
        exps.append(_expectation("expect_column_to_exist", column=cfg.id_column))
        exps.append(_expectation("expect_column_values_to_not_be_null", column=cfg.id_column))
    if cfg.event_time_column:
        exps.append(_expectation("expect_column_to_exist", column=cfg.event_time_column))
    # Same rule as airloop.data.datasets.feature_columns: declared features, else every non-reserved column.
    reserved = {cfg.target, cfg.id_column, cfg.event_time_column}
    features = cfg.features or [c for c in columns if c not in reserved and not str(c).startswith("_")]
    exps += [_expectation("expect_column_to_exist", column=c) for c in features]
    exps.append(_expectation("expect_table_row_count_to_be_between", min_value=1))
    return {
        "name": cfg.name,
        "expectations": exps,
        "meta": {"airloop": "default suite built from the pipeline config (no reviewed JSON suite)"},
    }


def _columns_of(exp: dict) -> list[str]:
    kwargs = exp.get("kwargs") or {}
    cols = [kwargs[k] for k in ("column", "column_A", "column_B") if isinstance(kwargs.get(k), str)]
    for key in ("column_list", "column_set"):
        if isinstance(kwargs.get(key), list | tuple | set):
            cols += [c for c in kwargs[key] if isinstance(c, str)]
    return cols


def _severity(exp: dict) -> str:
    """``meta.severity``, else GX's own ``severity`` field (``info`` counts as a warning), else critical."""
    value = (exp.get("meta") or {}).get("severity") or exp.get("severity") or CRITICAL
    return WARNING if value == "info" else value


def check_suite(suite: Any, source: str) -> dict:
    """Check a suite dict in GX 1.x's JSON format; ``source`` names it in errors. Returns the suite."""
    with _quiet_gx():
        import great_expectations as gx
        from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    if not isinstance(suite, dict) or not isinstance(suite.get("expectations"), list):
        raise SuiteError(f"{source}: expected a JSON object with an 'expectations' list, found {type(suite).__name__}")
    for i, exp in enumerate(suite["expectations"]):
        where = f"{source}: expectation #{i} ({exp.get('type', '?') if isinstance(exp, dict) else exp!r})"
        if not isinstance(exp, dict):
            raise SuiteError(f"{where}: expected an object with 'type' and 'kwargs'")
        if "expectation_type" in exp:
            raise SuiteError(f"{where}: key 'expectation_type' is GX 0.x format; GX 1.x calls it 'type'")
        if _severity(exp) not in SEVERITIES:
            raise SuiteError(f"{where}: meta.severity: expected one of {SEVERITIES}, found {_severity(exp)!r}")
        bookkeeping = [c for c in _columns_of(exp) if c.startswith("_")]
        if bookkeeping:
            raise SuiteError(f"{where}: columns {bookkeeping} are Airloop bookkeeping ('_' prefix), never checked")
        try:
            ExpectationConfiguration(**exp).to_domain_obj()
        except Exception as err:  # GX raises several types here (pydantic, TypeError, its own)
            first = str(err).strip().splitlines()
            raise SuiteError(f"{where}: not a valid expectation: {' '.join(first[:3])}") from None
    try:
        gx.ExpectationSuite(**suite)
    except Exception as err:
        raise SuiteError(f"{source}: not a valid GX 1.x expectation suite: {err}") from None
    return suite


def load_suite(cfg: PipelineConfig, columns: list[str]) -> dict:
    """The pipeline's suite as a JSON-able dict: the reviewed JSON file if it exists, else the default suite.

    Raises :class:`SuiteError` naming the file when it is not valid JSON or not a valid GX 1.x suite.
    """
    path = suite_path(cfg)
    if not path.exists():
        return default_suite(cfg, columns)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SuiteError(f"{path}: not valid JSON: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SuiteError(f"{path}: cannot be read: {err}") from None
    if isinstance(data, dict):
        data.setdefault("name", cfg.name)
    return check_suite(data, str(path))


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


def _exception_message(info: dict | None) -> str | None:
    """GX reports errors either flat or keyed by metric id; return the first message."""
    if not info:
        return None
    entries = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for entry in entries:
        if entry.get("raised_exception", True) and entry.get("exception_message"):
            return str(entry["exception_message"]).removeprefix("Error: ")
    return None


def _short(text: str) -> str:
    return text if len(text) <= _DETAILS_MAX_CHARS else text[: _DETAILS_MAX_CHARS - 3] + "..."


def _failure(exp_type: str, kwargs: dict, result: dict, error: str | None) -> dict:
    """One failed expectation as a JSON-able dict: expectation, column, unexpected_percent, details."""
    pct = result.get("unexpected_percent_total")  # share of all rows; GX's unexpected_percent skips nulls
    if pct is None:
        pct = result.get("unexpected_percent")
    if error:
        details = f"error: {error}"
    elif exp_type == "expect_column_to_exist":
        details = "column not in the batch"
    elif (result.get("details") or {}).get("mismatched"):
        mismatched = result["details"]["mismatched"]
        details = "; ".join(f"{k} columns {v}" for k, v in sorted(mismatched.items(), reverse=True))
    elif "observed_value" in result:
        details = f"observed {result['observed_value']}"
    elif result.get("unexpected_count") is not None:
        details = f"{result['unexpected_count']} of {result.get('element_count')} rows"
        # GX's partial_unexpected_counts count within a 20-row sample only, so show values, not counts.
        examples = [repr(c["value"]) for c in (result.get("partial_unexpected_counts") or [])[:3]]
        if examples and exp_type != "expect_column_values_to_not_be_null":
            details += f", e.g. {', '.join(examples)}"
    else:
        details = ""
    column = kwargs.get("column")
    return {
        "expectation": exp_type,
        "column": str(column) if column is not None else None,
        "unexpected_percent": round(float(pct), 3) if pct is not None and math.isfinite(pct) else None,
        "details": _short(details),
    }


def _add_type_share(failure: dict, kwargs: dict, data: pd.DataFrame) -> None:
    """GX reports a column's wrong type without a share of rows; for a numeric type list, count the values
    that are not numbers, so the message says how much of the column went bad."""
    numeric = {"int64", "float64", "int32", "float32", "Int64", "Float64"}
    col = kwargs.get("column")
    wanted = set(kwargs.get("type_list") or [kwargs.get("type_")] or [])
    if failure["unexpected_percent"] is not None or col not in data.columns or not wanted & numeric:
        return
    values = data[col]
    bad = values.notna() & pd.to_numeric(values, errors="coerce").isna()
    if len(values):
        failure["unexpected_percent"] = round(float(bad.mean() * 100), 3)
        examples = ", ".join(repr(v) for v in values[bad].unique()[:3])
        failure["details"] = _short(
            f"{failure['details']}; {int(bad.sum())} of {len(values)} values not numeric"
            + (f", e.g. {examples}" if examples else "")
        )


def validate_frame(
    frame: pd.DataFrame, suite: dict, *, docs_dir: str | None = None, batch_id: str = ""
) -> ValidationOutcome:
    """Run a suite (GX 1.x JSON dict) on a frame; with ``docs_dir`` (a local folder), build Data Docs there.

    Bookkeeping columns (``_`` prefix) are not shown to GX. Returns a :class:`ValidationOutcome`; its
    ``data_docs`` is the path of ``index.html`` when Data Docs were built.
    """
    with _quiet_gx():
        import great_expectations as gx
        from great_expectations.checkpoint import UpdateDataDocsAction

    name = suite.get("name") or "airloop"
    gx_suite = copy.deepcopy(suite)
    gx_suite["name"] = name
    for exp in gx_suite.get("expectations", []):
        severity = _severity(exp)
        exp["meta"] = {**(exp.get("meta") or {}), "severity": severity}
        exp["severity"] = severity  # GX's own field, so its Data Docs show the same severity
    data = frame[[c for c in frame.columns if not str(c).startswith("_")]]

    with _quiet_gx():
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
            failure = _failure(
                config.type, dict(config.kwargs), dict(r.result or {}), _exception_message(r.exception_info)
            )
            _add_type_share(failure, dict(config.kwargs), data)
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
        if cfg.target not in _columns_of(e) and not e.get("type", "").startswith(_BATCH_SIZE_EXPECTATIONS)
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
    frame = read_parquet(staged_uri)
    suite = load_suite(cfg, list(map(str, frame.columns)))

    docs_uri = lake.report("data_docs", batch_id)
    docs_dir = _local_path(docs_uri)
    if docs_dir:
        delete(docs_uri)  # a rerun replaces the batch's Data Docs instead of piling up old runs
    # On an s3:// lake there is no local folder to build into; Data Docs are skipped (the verdict and the
    # failures still go to the manifest and the task log). Uploading a built site is a possible follow-up.
    outcome = validate_frame(frame, suite, docs_dir=docs_dir, batch_id=batch_id)
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

    experiment_id = tracking.ensure_experiment(cfg)
    client = MlflowClient()
    tags = {
        **tracking.lineage_tags(run_info),
        "airloop.stage": "validate",
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
