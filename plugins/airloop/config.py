"""The pipeline YAML, validated by one pydantic model with defaults.

Four keys are enough (``name``, ``source``, ``target``, ``task``); everything else has a default.
``load_pipeline(path)`` returns a :class:`PipelineConfig` or raises :class:`PipelineConfigError` naming the
file, the key, what was expected and what was found.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from airloop.errors import BadInput

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
KEY_PREFIX = "key '"  # a cross-key check's message that starts so names its key itself (see _format_errors)


# The stages of a pipeline, one Airflow DAG each (:meth:`PipelineConfig.dag_id`), in the loop's order.
STAGES = ("ingest", "validate", "train", "evaluate", "promote", "score", "monitor", "retrain")


class PipelineConfigError(BadInput):
    """A pipeline YAML that cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(_Strict):
    """Where raw batches come from. ``${VAR}`` in the URI is expanded from the environment."""

    uri: str
    format: Literal["csv", "parquet", "jsonl"] | None = None  # default: from the file extension
    options: dict[str, Any] = Field(default_factory=dict)  # e.g. {"sep": ";"} for CSV
    connection: str | None = None  # an Airflow Connection id holding the endpoint and credentials
    table: str | None = None  # SQL sources: a table ...
    query: str | None = None  # ... or a query
    chunk_rows: int = Field(250_000, ge=1000)  # large inputs are streamed in chunks of this many rows

    @field_validator("uri")
    @classmethod
    def _expand(cls, v: str) -> str:
        return os.path.expandvars(v)


class LabelsConfig(_Strict):
    """A delayed labels feed, joined to features and predictions on the id column."""

    uri: str
    format: Literal["csv", "parquet", "jsonl"] | None = None

    @field_validator("uri")
    @classmethod
    def _expand(cls, v: str) -> str:
        return os.path.expandvars(v)


IMPORT_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
CRON_PRESETS = frozenset({"@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly", "@annually"})


class SearchRange(_Strict):
    """A numeric search range (``{low: 0.001, high: 100, log: true}``); integers when low and high are."""

    low: int | float
    high: int | float
    log: bool = False


class CandidateConfig(_Strict):
    """One candidate model: a scikit-learn estimator by short name or import path, and its search space
    (per parameter: a list of values to choose from, or a :class:`SearchRange`)."""

    name: str
    estimator: str
    params: dict[str, Any] = Field(default_factory=dict)
    search_space: dict[str, list[Any] | SearchRange] = Field(default_factory=dict)

    @field_validator("estimator")
    @classmethod
    def _path_shape(cls, v: str) -> str:
        if "." in v and not IMPORT_PATH.match(v):
            raise ValueError("a short name or a dotted import path like 'sklearn.svm.SVC'")
        return v


class TrainingConfig(_Strict):
    candidates: list[CandidateConfig] | None = None  # default: per task type, see airloop.model.candidates
    # Top-level packages an ``estimator:`` import path may come from. Checked without importing anything,
    # so a YAML cannot make ``airloop check`` (or a DAG file parse) run a module of its choosing.
    estimator_packages: list[str] = Field(default_factory=lambda: ["sklearn"])
    n_iter: int = Field(4, ge=1)
    search: Literal["optuna", "random"] = "optuna"  # Optuna TPE with pruning over folds, or RandomizedSearchCV
    cv_folds: int = Field(3, ge=2)
    test_size: float = Field(0.2, gt=0, lt=1)
    seed: int = 42
    max_rows: int = Field(200_000, ge=100)

    @model_validator(mode="after")
    def _allowed_estimators(self) -> TrainingConfig:
        allowed = set(self.estimator_packages)
        for c in self.candidates or []:
            if "." in c.estimator and c.estimator.split(".", 1)[0] not in allowed:
                top = c.estimator.split(".", 1)[0]
                raise ValueError(
                    f"estimator import paths from training.estimator_packages {sorted(allowed)} (add {top!r} "
                    f"there to allow it); candidate {c.name!r} names {c.estimator!r}"
                )
        return self


class EvaluationConfig(_Strict):
    primary_metric: str | None = None  # default: roc_auc (classification) or rmse (regression)
    min_value: float | None = None  # the minimum acceptable value of the primary metric
    tolerance: float = Field(0.0, ge=0)  # how much worse than the champion a challenger may be
    slice_tolerance: float = Field(0.05, ge=0)  # how much worse a segment may get
    bootstrap_resamples: int = Field(200, ge=20)
    baseline: bool = True  # the challenger must credibly beat the class prior / training mean (issue 14)
    coverage: float = Field(0.9, gt=0, lt=1)  # declared coverage of conformal prediction sets / intervals
    suspect_labels: bool = True  # send training rows whose label the model strongly contradicts to review


class PromotionConfig(_Strict):
    approval: Literal["none", "required"] = "none"
    approval_timeout_hours: float = Field(24.0, gt=0)


class ServingConfig(_Strict):
    low_confidence_threshold: float | None = Field(None, gt=0, le=1)  # probability below which to review
    # What sends a served prediction to the review queue: "probability" (below low_confidence_threshold),
    # "set_size" (classification: a conformal prediction set of more than review_max_set_size classes) or
    # "interval_width" (regression: a conformal interval wider than review_max_interval_width).
    review_by: Literal["probability", "set_size", "interval_width"] = "probability"
    review_max_set_size: int = Field(1, ge=1)  # review_by set_size: larger sets are ambiguous
    review_max_interval_width: float | None = Field(None, gt=0)  # review_by interval_width: in target units
    shadow: bool = False  # serve the challenger in shadow beside the champion
    poll_interval_s: float = Field(5.0, gt=0)  # how often the server checks the alias for a new version
    log_flush_s: float = Field(2.0, gt=0)  # request/response log: write a batch to the lake this often
    max_request_rows: int = Field(10_000, ge=1)  # larger payloads are refused with 413
    max_batch_rows: int = Field(512, ge=1)  # concurrent requests are scored together up to this many rows
    max_body_bytes: int = Field(16 * 2**20, ge=1)  # larger request bodies get 413 while still being read
    auth_connection: str | None = None  # Airflow Connection whose password is airloop serve's bearer token


class MonitoringConfig(_Strict):
    psi_warn: float = Field(0.1, gt=0)
    psi_alert: float = Field(0.25, gt=0)
    ks_pvalue: float = Field(0.01, gt=0, lt=1)
    confirm_days: int = Field(2, ge=1)  # consecutive alerting days that confirm drift
    min_drifted_share: float = Field(0.0, ge=0, le=1)  # or: this share of features alerting on one day
    reference_rows: int = Field(5000, ge=100)
    alert_connection: str | None = None  # an Airflow Connection id (HTTP) to POST confirmed-drift alerts to
    # "calibrated": a feature alerts when its PSI is beyond what no-drift resamples of the reference at the
    # batch's size reach (p < false_alarm_rate / tests); "fixed": at psi_alert whatever the batch's size.
    thresholds: Literal["calibrated", "fixed"] = "calibrated"
    false_alarm_rate: float = Field(0.05, gt=0, lt=1)  # per batch, over all features together
    null_resamples: int = Field(2000, ge=200)
    multivariate: bool = True  # PCA reconstruction error, catches joint shifts no single feature shows


class RetrainConfig(_Strict):
    window_days: int = Field(14, ge=1)
    reference_rows: int = Field(2000, ge=0)  # sample of older data kept in the retraining window
    cooldown_days: int = Field(3, ge=0)
    max_retrains: int = Field(3, ge=1)
    max_retrains_window_days: int = Field(30, ge=1)
    max_failed_in_row: int = Field(3, ge=1)
    # What starts a retrain: "drift" (confirmed drift), "estimated_performance" (the estimate, before labels,
    # below evaluation.min_value or the champion's holdout value minus estimate_tolerance on confirm_days
    # days in a row), or "both" (either one).
    trigger: Literal["drift", "estimated_performance", "both"] = "estimated_performance"
    estimate_tolerance: float = Field(0.03, ge=0)
    estimate_bound: Literal["estimate", "lower_bound"] = "estimate"  # lower_bound: the pessimistic end of the band


class ScheduleConfig(_Strict):
    ingest: str | None = "@daily"
    monitor: str | None = "@daily"
    start_date: str = "2026-01-01"

    @field_validator("ingest", "monitor")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is None or v in CRON_PRESETS:
            return v
        from croniter import croniter  # Airflow's own cron parser (a dependency of Airflow)

        if len(v.split()) != 5 or not croniter.is_valid(v):
            raise ValueError(f"a 5-field cron expression like '0 6 * * *' or one of {sorted(CRON_PRESETS)}")
        return v

    @field_validator("start_date")
    @classmethod
    def _date(cls, v: str) -> str:
        try:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
                raise ValueError
            dt.date.fromisoformat(v)
        except ValueError:
            raise ValueError("a date like 2026-01-31 (YYYY-MM-DD)") from None
        return v


class PipelineConfig(_Strict):
    """A declared pipeline. Only name, source, target and task are required."""

    name: str = Field(pattern=NAME_PATTERN)
    source: SourceConfig
    target: str
    task: Literal["classification", "regression"]
    description: str = ""
    features: list[str] | None = None  # default: every column but target, id and event time
    categorical_features: list[str] | None = None  # default: inferred from dtypes
    id_column: str | None = None
    event_time_column: str | None = None
    segment_columns: list[str] = Field(default_factory=list)
    labels: LabelsConfig | None = None
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    owner: str = "airloop"
    source_file: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> PipelineConfig:
        reserved = {c for c in (self.id_column, self.event_time_column) if c}
        if self.target in reserved:
            raise ValueError(f"target {self.target!r} cannot also be the id or event-time column")
        if self.features and self.target in self.features:
            raise ValueError(f"target {self.target!r} must not be listed in features")
        review_by, wants = self.serving.review_by, {"set_size": "classification", "interval_width": "regression"}
        if review_by in wants and self.task != wants[review_by]:
            usable = "'probability' or 'set_size'" if self.task == "classification" else "'interval_width'"
            raise ValueError(
                f"{KEY_PREFIX}serving.review_by': expected {usable} for a {self.task} pipeline ({review_by!r} is "
                f"for {wants[review_by]}), found {review_by!r}"
            )
        if review_by == "interval_width" and self.serving.review_max_interval_width is None:
            raise ValueError(
                f"{KEY_PREFIX}serving.review_max_interval_width': expected a width in target units (serving.review_by "
                "is 'interval_width'), found none"
            )
        return self

    @property
    def primary_metric(self) -> str:
        if self.evaluation.primary_metric:
            return self.evaluation.primary_metric
        return "roc_auc" if self.task == "classification" else "rmse"

    def dag_id(self, stage: str) -> str:
        """The Airflow DAG id of one of this pipeline's stages: ``airloop_<name>_<stage>``."""
        return f"airloop_{self.name}_{stage}"

    @property
    def registered_model_name(self) -> str:
        return f"airloop-{self.name}"

    @property
    def experiment_name(self) -> str:
        return f"airloop/{self.name}"


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def _format_errors(path: str, err: ValidationError) -> str:
    lines = [f"{path}: invalid pipeline definition"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "missing":
            lines.append(f"  - key '{key}': required, but missing")
        elif e["type"] == "extra_forbidden":
            lines.append(f"  - key '{key}': not a known key (found {_describe(e['input'])})")
        elif e["msg"].removeprefix("Value error, ").startswith(KEY_PREFIX):
            lines.append(f"  - {e['msg'].removeprefix('Value error, ')}")
        else:
            expected = e["msg"].removeprefix("Input should be ").removeprefix("Value error, ")
            lines.append(f"  - key '{key}': expected {expected}, found {_describe(e.get('input'))}")
    return "\n".join(lines)


def parse_pipeline(data: Any, path: str = "<pipeline>") -> PipelineConfig:
    """Validate an already-loaded mapping; ``path`` is only used in error messages."""
    if not isinstance(data, dict):
        raise PipelineConfigError(f"{path}: expected a mapping of keys at the top level, found {_describe(data)}")
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise PipelineConfigError(_format_errors(path, err)) from None
    cfg.source_file = path
    return cfg


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Read and validate one pipeline YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise PipelineConfigError(f"{path}: not valid YAML: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise PipelineConfigError(f"{path}: cannot be read: {err}") from None
    return parse_pipeline(data, str(path))


def load_pipelines(folder: str | Path | None = None) -> dict[str, PipelineConfig]:
    """Every ``*.yaml``/``*.yml`` pipeline in the folder, by name; duplicate names are an error."""
    from airloop.settings import pipelines_dir

    folder = Path(folder) if folder else pipelines_dir()
    found: dict[str, PipelineConfig] = {}
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        cfg = load_pipeline(path)
        if cfg.name in found:
            raise PipelineConfigError(
                f"{path}: key 'name': expected a name not used by another pipeline, "
                f"found {cfg.name!r}, already declared in {found[cfg.name].source_file}"
            )
        found[cfg.name] = cfg
    return found


def get_pipeline(name: str, folder: str | Path | None = None) -> PipelineConfig:
    """The pipeline called ``name``; a clear error lists the known names when it does not exist."""
    pipelines = load_pipelines(folder)
    if name not in pipelines:
        known = ", ".join(sorted(pipelines)) or "none"
        raise PipelineConfigError(f"no pipeline named {name!r} (known: {known})")
    return pipelines[name]
