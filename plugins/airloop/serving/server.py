"""The serving state of one pipeline: :class:`ModelServer` takes a pipeline config (and a lake) and answers
:meth:`ModelServer.invoke` (a raw request body) with that request's predictions.

- concurrent requests are *micro-batched*: one coroutine drains the queue and scores every pending request in
  one ``predict_proba`` call (in a worker thread when the sklearn pipeline, not the compiled path, scores);
  every request was validated before it joined the batch, and if the batch still fails (or gives a
  non-finite output) each request is scored alone, so one poisonous request fails only itself;
- a background thread polls the registry alias, loads a new version and swaps one reference: a batch in
  flight finishes on the model it started with, and no request is dropped;
- requests and responses go to the lake in batches from another thread (:mod:`airloop.serving.servinglog`);
  rows flagged by ``serving.review_by`` also go to the review queue (:mod:`airloop.serving.review`);
- a version the gate calibrated answers each row's conformal prediction set (classification) or interval
  (regression) beside its prediction, from the threshold stored with the version (vector operations only);
- in shadow mode the challenger scores the same rows after the champion answered; its output is logged only.

It is one module (about 430 lines) because the batcher, the alias swap and the shadow scorer share one
state, the current model reference and its queue; payload parsing, the compiled path, metrics and the
serving log are their own modules.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from airloop.config import PipelineConfig
from airloop.model.conformal import SERVED_COLUMNS, served_columns
from airloop.serving.loaded import LoadedModel, load_version
from airloop.serving.metrics import Metrics
from airloop.serving.payload import PayloadError, parse_request
from airloop.serving.review import review_flags
from airloop.serving.servinglog import FLUSH_PAUSE_S, IdMaker, log_table, write_serving_log
from airloop.serving.spec import to_frame
from airloop.store.lake import Lake
from airloop.store.models import ModelRefused

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    cols: dict[str, list]
    rows: int
    future: asyncio.Future
    entity_ids: list | None = None


@dataclass(frozen=True)
class Scores:
    """A model's output for parsed columns: ``probability`` is that of the predicted class and ``positive``
    that of the positive class (both None without class probabilities; ``positive`` None beyond two classes);
    ``proba`` is the whole (rows, classes) matrix."""

    predictions: np.ndarray
    probability: np.ndarray | None = None
    positive: np.ndarray | None = None
    proba: np.ndarray | None = None


@dataclass(frozen=True)
class ScoredBatch:
    """One model call over several requests: one response per request, and what :meth:`ModelServer._after`
    needs to score the shadow and log the batch once the responses are out (lists are per row)."""

    responses: list[dict]
    spec: LoadedModel
    cols: dict[str, list]
    ids: list[str]
    predictions: list
    probabilities: list
    positive: np.ndarray | None
    low_confidence: list[bool]
    entity_ids: list
    served: dict[str, list]  # the conformal columns (airloop.model.conformal.served_columns), maybe empty


# The collector's thresholds while serving. At CPython's (700, 10, 10) the buffered log rows (2 s of
# requests) kept being traversed by older-generation collections: p99 4.9-12 ms at 6,500 req/s, against
# 3.0-3.4 ms with the collector off and 3.7-4.9 ms with these (bench/results/serve.md). Cycles are still
# collected, just in fewer, larger young passes and a full pass every 100 x 50 x 20,000 allocations.
GC_THRESHOLDS = (20_000, 50, 100)

_last_traceback = [-1e9]


def log_failure(what: str, err: BaseException) -> None:
    """Log a server-side failure: with its traceback at most once a minute, else as one line (a flood of
    failing requests must not become a flood of tracebacks)."""
    now = time.monotonic()
    if now - _last_traceback[0] > 60:
        _last_traceback[0] = now
        log.error("%s", what, exc_info=err)
    else:
        log.error("%s: %s: %s", what, type(err).__name__, str(err)[:200])


def _check_finite(values: np.ndarray) -> None:
    """Refuse a model output that is not finite (an extreme input can overflow a linear model): raised for the
    whole batch, the batch is then scored request by request and only the request behind it fails."""
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise PayloadError("body: the model's output for these values is not finite; are some numbers extreme?", 422)


class ModelServer:
    """The serving state of one pipeline: the current model (swapped atomically), the micro-batcher, the
    alias poller and the lake logger. :func:`airloop.serving.app.create_app` wraps it in FastAPI."""

    def __init__(self, cfg: PipelineConfig, *, lake: Lake | None = None, log_requests: bool = True):
        self.cfg = cfg
        self.lake = lake or Lake(cfg.name)
        self.log_requests = log_requests
        self.current: LoadedModel | None = None
        self.shadow: LoadedModel | None = None
        self.refused: set[str] = set()  # versions the loader refused (not blessed, not skops): never retried
        self.metrics = Metrics()
        self.log_buffer: deque[dict] = deque()  # column chunks, one per scored batch
        self.buffered_rows = 0
        self._queue: asyncio.Queue[_Pending] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="airloop-predict")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._batcher: asyncio.Task | None = None
        self._ids = IdMaker(cfg.name)
        self._gc_before: tuple[int, ...] | None = None

    # --- model versions -------------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Load the version the alias ``champion`` points at (and the challenger, in shadow mode) if it
        changed; returns True when the champion was swapped. Errors leave the current model serving."""
        from airloop.store import registry, tracking

        tracking.configure_mlflow()
        swapped = False
        aliases = registry.alias_versions(self.cfg)  # one read per poll: the versions load only when moved
        version = aliases.get(registry.CHAMPION)
        if (
            version is not None
            and (self.current is None or self.current.version != version)
            and version not in self.refused
        ):
            try:
                loaded = load_version(self.cfg, version)
            except ModelRefused:
                # Logged and recorded by the loader; remember it, so the next polls neither retry nor re-log.
                self.refused.add(version)
                log.error("champion v%s refused; still serving v%s", version, self.current and self.current.version)
                if self.current is None:
                    raise
                return False
            previous, self.current = self.current, loaded  # one reference assignment: atomic
            self.metrics.swaps += previous is not None
            swapped = True
            if self._gc_before is not None:  # serving already: the new version (and what its loading
                gc.freeze()  # imported, numba say) joins the long-lived objects no collection traverses
            log.info(
                "serving %s v%s through the %s path (was %s)",
                self.cfg.registered_model_name,
                loaded.version,
                loaded.path,
                previous and previous.version,
            )
        if self.cfg.serving.shadow:
            challenger = aliases.get(registry.CHALLENGER)
            if challenger is None:
                self.shadow = None
            elif challenger not in self.refused and (self.shadow is None or self.shadow.version != challenger):
                try:
                    self.shadow = load_version(self.cfg, challenger)
                except ModelRefused:
                    self.refused.add(challenger)
                    self.shadow = None
                else:
                    log.info("shadow: challenger v%s", self.shadow.version)
        return swapped

    def _poll(self) -> None:
        while not self._stop.wait(self.cfg.serving.poll_interval_s):
            try:
                self.refresh()
            except Exception:  # the registry may be briefly unreachable: keep serving, try again later
                log.exception("alias poll failed; still serving v%s", self.current and self.current.version)

    # --- scoring ---------------------------------------------------------------------------------------

    def predict_rows(self, spec: LoadedModel, cols: dict[str, list]) -> Scores:
        """The :class:`Scores` of parsed columns: through the compiled path when the model has one, else
        through the sklearn pipeline."""
        model: Any = spec.compiled
        data: Any = cols
        if model is None:
            model, data = spec.sklearn, to_frame(cols, spec.columns)
        if spec.classes is not None and hasattr(spec.model, "predict_proba"):
            proba = np.asarray(model.predict_proba(data))
            best = proba.argmax(axis=1)
            score = proba[:, 1] if proba.shape[1] == 2 else None
            return Scores(spec.classes[best], proba[np.arange(len(best)), best], score, proba)
        return Scores(np.asarray(model.predict(data)))

    def _score_batch(self, spec: LoadedModel, items: list[_Pending]) -> ScoredBatch:
        """Score every pending request in one model call; returns the :class:`ScoredBatch`."""
        if len(items) == 1:
            cols = items[0].cols
        else:
            cols = {n: [v for it in items for v in it.cols[n]] for n in spec.names}
        scores = self.predict_rows(spec, cols)
        pred, prob = scores.predictions, scores.probability
        _check_finite(prob if prob is not None else pred)
        n = len(pred)
        self.metrics.batches += 1
        self.metrics.batch_rows += n
        self.metrics.predictions += n
        pred_list = pred.tolist()
        prob_list = prob.tolist() if prob is not None else [None] * n
        served = served_columns(self.cfg.task, spec.conformal_threshold, pred, scores.proba, spec.classes)
        low = review_flags(self.cfg, prob, served, n)
        self.metrics.low_confidence += sum(low)
        sets, lows, highs = served.get("prediction_set"), served.get("interval_low"), served.get("interval_high")
        ids = self._ids.make(n)
        out, start = [], 0
        for it in items:
            end = start + it.rows
            doc = {
                "predictions": pred_list[start:end],
                "probabilities": prob_list[start:end],
                "model_version": spec.version,
                "prediction_ids": ids[start:end],
                "low_confidence": low[start:end],
            }
            if served:  # beside MLflow's "predictions", so its clients keep working
                doc["coverage"] = spec.conformal_coverage
                if sets is not None:
                    doc["prediction_sets"] = sets[start:end]
                else:
                    doc["prediction_intervals"] = [list(b) for b in zip(lows[start:end], highs[start:end], strict=True)]
            out.append(doc)
            start = end
        entity = [e for it in items for e in (it.entity_ids or [None] * it.rows)]
        return ScoredBatch(out, spec, cols, ids, pred_list, prob_list, scores.positive, low, entity, served)

    def _after(self, batch: ScoredBatch) -> None:
        """After the answers: the shadow challenger's predictions, and the log rows (flushed by another thread)."""
        spec, cols, ids, pred, score = batch.spec, batch.cols, batch.ids, batch.predictions, batch.positive
        shadow = self.shadow
        s_pred = s_prob = None
        if shadow is not None and set(shadow.names) <= set(cols):
            try:
                s = self.predict_rows(shadow, cols)
                s_pred, s_prob = s.predictions.tolist(), (s.probability.tolist() if s.probability is not None else None)
                self.metrics.shadow_rows += len(s_pred)
                self.metrics.shadow_disagreements += sum(a != b for a, b in zip(pred, s_pred, strict=True))
            except Exception:  # a broken challenger must never hurt the champion's answers
                log.exception("shadow challenger v%s failed", shadow.version)
        if not self.log_requests:
            return
        n = len(ids)
        nothing = [None] * n
        chunk = {  # columns, not rows: cheap here; the flush thread turns them into Parquet
            "prediction_id": ids,
            "served_at": [dt.datetime.now(dt.UTC).isoformat()] * n,
            "model_version": [spec.version] * n,
            "model_run_id": [spec.run_id] * n,
            "prediction": pred,
            "probability": batch.probabilities,
            "score": nothing if score is None else score.tolist(),
            "low_confidence": batch.low_confidence,
            "entity_id": [None if e is None else str(e) for e in batch.entity_ids],
            "shadow_version": nothing if s_pred is None else [shadow.version] * n,
            "shadow_prediction": nothing if s_pred is None else s_pred,
            "shadow_probability": nothing if s_prob is None else s_prob,
            "_inputs": (spec.names, cols),
        }
        for key in SERVED_COLUMNS[self.cfg.task]:  # every chunk has the same keys, calibrated or not
            chunk[key] = batch.served.get(key, nothing)
        self.log_buffer.append(chunk)
        self.buffered_rows += n

    async def _batch_loop(self) -> None:
        assert self._queue is not None
        limit = self.cfg.serving.max_batch_rows
        while True:
            first = await self._queue.get()
            items, rows = [first], first.rows
            while rows < limit and not self._queue.empty():
                nxt = self._queue.get_nowait()
                items.append(nxt)
                rows += nxt.rows
            spec = self.current  # captured once: a swap during this batch cannot mix versions
            batches = await self._score_isolated(spec, items)
            for it, res in zip(items, [r for b in batches for r in b.responses], strict=True):
                if not it.future.done():
                    it.future.set_result(res)
            if self.log_requests or self.shadow is not None:
                await asyncio.sleep(0)  # let the handlers send their responses first
                for batch in batches:
                    try:
                        self._after(batch)
                    except Exception:  # logging must never take the server down
                        log.exception("could not record a batch of %d predictions", len(batch.ids))

    async def _score(self, spec: LoadedModel, items: list[_Pending]) -> ScoredBatch:
        if spec.compiled is not None:  # well under a millisecond: no thread hop
            return self._score_batch(spec, items)
        # the sklearn pipeline takes milliseconds: keep the loop accepting meanwhile
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._score_batch, spec, items)

    async def _score_isolated(self, spec: LoadedModel, items: list[_Pending]) -> list[ScoredBatch]:
        """The scored batch of ``items``; if one call over all of them fails, each request is scored alone
        and a request that still fails gets its own error (its future is set here; it is left out)."""
        try:
            return [await self._score(spec, items)]
        except Exception as err:  # noqa: BLE001 - isolated below
            if len(items) == 1:
                self._fail(items[0], err, spec)
                return []
        self.metrics.isolated_batches += 1
        out = []
        for it in items:
            try:
                out.append(await self._score(spec, [it]))
            except Exception as err:  # noqa: BLE001 - only this request fails
                self._fail(it, err, spec)
        return out

    def _fail(self, item: _Pending, err: Exception, spec: LoadedModel) -> None:
        """Answer one request with its own error: 422 for values the model cannot take, 500 otherwise (with
        one traceback a minute at most; every further failure is one log line)."""
        if isinstance(err, PayloadError):
            answer: Exception = err
        elif isinstance(err, ValueError | ArithmeticError):
            answer = PayloadError(f"body: the values of this request cannot be scored by v{spec.version}: {err}", 422)
        else:
            answer = err
            log_failure(f"v{spec.version} failed on a request", err)
        if not item.future.done():
            item.future.set_exception(answer)

    async def invoke(self, body: bytes) -> dict:
        """Parse, queue and await one request's predictions; raises PayloadError for a bad payload."""
        spec = self.current
        if spec is None:
            raise PayloadError(
                f"model {self.cfg.registered_model_name!r}: no version has the alias 'champion' yet", 503
            )
        id_column = self.cfg.id_column if self.log_requests else None
        cols, entity = parse_request(body, spec, self.cfg.serving.max_request_rows, id_column)
        rows = len(next(iter(cols.values())))
        future = asyncio.get_running_loop().create_future()
        assert self._queue is not None
        self._queue.put_nowait(_Pending(cols, rows, future, entity))
        return await future

    # --- the request log -------------------------------------------------------------------------------

    def flush(self, *, pause_s: float = 0.0, pause_budget_s: float = 1.0) -> int:
        """Write buffered prediction rows to the lake (and low-confidence ones to the review queue);
        returns the number of rows written. Rows stay buffered if the write fails. With ``pause_s``, the
        rows are converted a slice at a time with a sleep between slices (see
        :func:`airloop.serving.servinglog.log_table`)."""
        import pyarrow.compute as pc

        from airloop.serving import review

        chunks = []
        while self.log_buffer:
            chunks.append(self.log_buffer.popleft())
        if not chunks:
            return 0
        rows = sum(len(c["prediction_id"]) for c in chunks)
        try:
            table = log_table(chunks, pause_s, pause_budget_s)
            write_serving_log(self.lake, table)
            low_mask = table.column("low_confidence")
            if pc.any(low_mask).as_py():
                review.enqueue(self.cfg, self.lake, table.filter(low_mask).to_pandas())
        except Exception:
            self.metrics.log_errors += 1
            self.log_buffer.extendleft(reversed(chunks))
            log.exception("could not write %d prediction rows to the lake; kept for the next try", rows)
            return 0
        self.buffered_rows -= rows
        self.metrics.logged_rows += rows
        return rows

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.cfg.serving.log_flush_s):
            self.flush(pause_s=FLUSH_PAUSE_S, pause_budget_s=self.cfg.serving.log_flush_s / 4)

    # --- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the champion (absent is allowed: /health says so), start the batcher and the threads."""
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.refresh)
        except Exception:
            log.exception("could not load the champion of %s at start-up", self.cfg.name)
        # Long-lived objects (mlflow, sklearn, the model) out of the collector's reach, a young generation
        # collected every GC_THRESHOLDS[0] allocations instead of 700, and short GIL slices for the background
        # threads: all three keep pauses out of the request latency tail.
        gc.collect()
        gc.freeze()
        self._gc_before = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        sys.setswitchinterval(0.0005)
        self._queue = asyncio.Queue()
        self._batcher = asyncio.create_task(self._batch_loop())
        self._stop.clear()
        for target, name in ((self._poll, "airloop-alias-poll"), (self._flush_loop, "airloop-lake-log")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    async def stop(self) -> None:
        """Stop the threads and write what is still buffered."""
        self._stop.set()
        if self._batcher:
            self._batcher.cancel()
        if self._gc_before is not None:  # the host process's own setting (tests run servers in-process)
            gc.set_threshold(*self._gc_before)
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        self._executor.shutdown(wait=True)
        if self.log_requests:
            self.flush()
