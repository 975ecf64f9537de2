"""The serving counters and latency histogram: :class:`Metrics` takes observations from the request path and
the batcher and returns them as Prometheus text (``GET /metrics``).
"""

from __future__ import annotations

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    """Counters and a latency histogram, rendered in the Prometheus text format. Updated from the event loop
    and the batch thread; single integer additions under the GIL are enough for monitoring counters."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.predictions = 0
        self.low_confidence = 0
        self.batches = 0
        self.batch_rows = 0
        self.isolated_batches = 0
        self.swaps = 0
        self.shadow_rows = 0
        self.shadow_disagreements = 0
        self.logged_rows = 0
        self.log_errors = 0
        self.buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.latency_sum = 0.0

    def observe(self, status: int, seconds: float) -> None:
        key = str(status)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.latency_sum += seconds
        for i, bound in enumerate(LATENCY_BUCKETS_S):
            if seconds <= bound:
                self.buckets[i] += 1
                return
        self.buckets[-1] += 1

    def render(self, pipeline: str, model_version: str | None, log_queue_rows: int) -> str:
        """The counters as Prometheus text, labelled ``pipeline``; ``model_version`` None means none served."""
        p = pipeline
        lines = [
            "# HELP airloop_requests_total Requests to /invocations by HTTP status.",
            "# TYPE airloop_requests_total counter",
            *(f'airloop_requests_total{{pipeline="{p}",status="{s}"}} {n}' for s, n in sorted(self.requests.items())),
            "# HELP airloop_request_seconds Latency of /invocations, from body received to response.",
            "# TYPE airloop_request_seconds histogram",
        ]
        total = 0
        for bound, n in zip(LATENCY_BUCKETS_S, self.buckets, strict=False):
            total += n
            lines.append(f'airloop_request_seconds_bucket{{pipeline="{p}",le="{bound}"}} {total}')
        total += self.buckets[-1]
        lines += [
            f'airloop_request_seconds_bucket{{pipeline="{p}",le="+Inf"}} {total}',
            f'airloop_request_seconds_sum{{pipeline="{p}"}} {self.latency_sum:.6f}',
            f'airloop_request_seconds_count{{pipeline="{p}"}} {total}',
        ]
        counters = {
            "predictions_total": ("Rows scored by the champion.", self.predictions),
            "low_confidence_total": (
                "Rows flagged by serving.review_by (low probability, large set or wide interval; sent to review).",
                self.low_confidence,
            ),
            "batches_total": ("Model calls (each scores one or more concurrent requests).", self.batches),
            "isolated_batches_total": (
                "Batches that failed as a whole and were scored request by request (one bad request fails alone).",
                self.isolated_batches,
            ),
            "model_swaps_total": ("Times a new version was loaded after an alias change.", self.swaps),
            "shadow_predictions_total": ("Rows scored by the shadow challenger.", self.shadow_rows),
            "shadow_disagreements_total": (
                "Shadow rows whose prediction differs from the champion's.",
                self.shadow_disagreements,
            ),
            "logged_rows_total": ("Prediction rows written to the lake.", self.logged_rows),
            "log_errors_total": ("Failed writes of the request log (rows kept for the next try).", self.log_errors),
        }
        for name, (help_text, value) in counters.items():
            lines += [f"# HELP airloop_{name} {help_text}", f"# TYPE airloop_{name} counter"]
            lines.append(f'airloop_{name}{{pipeline="{p}"}} {value}')
        lines += [
            "# HELP airloop_model_version Version number of the model being served (0: none).",
            "# TYPE airloop_model_version gauge",
            f'airloop_model_version{{pipeline="{p}"}} {model_version or 0}',
            "# HELP airloop_log_queue_rows Prediction rows waiting to be written to the lake.",
            "# TYPE airloop_log_queue_rows gauge",
            f'airloop_log_queue_rows{{pipeline="{p}"}} {log_queue_rows}',
        ]
        return "\n".join(lines) + "\n"
