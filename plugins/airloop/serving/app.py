"""Online serving: ``airloop serve NAME``, an HTTP JSON API in front of the champion (FastAPI + uvicorn).

:func:`create_app` takes a pipeline config and returns the ASGI app. ``POST /invocations`` takes MLflow
scoring-server bodies (``dataframe_split``, ``dataframe_records``, ``instances``/``inputs``) and answers
``{"predictions": [...], "probabilities": [...], "model_version": "3", "prediction_ids": [...],
"low_confidence": [...]}`` (``predictions`` is what MLflow's server returns, so its clients work unchanged).
``GET /health`` and Prometheus-style ``GET /metrics`` complete the API.

The request path is lean: ``POST /invocations`` is answered by a small ASGI front before FastAPI's routing,
and the body is checked against a column spec computed once per model version, never per request. The
batching, alias following and logging are :class:`airloop.serving.server.ModelServer`'s.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from airloop.config import PipelineConfig
from airloop.serving.payload import PayloadError
from airloop.serving.server import ModelServer
from airloop.store.lake import Lake

log = logging.getLogger(__name__)


def create_app(cfg: PipelineConfig, *, lake: Lake | None = None, log_requests: bool = True):
    """The FastAPI app serving ``cfg``'s champion; ``app.state.server`` is its :class:`ModelServer`."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, PlainTextResponse, Response

    server = ModelServer(cfg, lake=lake, log_requests=log_requests)

    @asynccontextmanager
    async def lifespan(app):
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    app = FastAPI(title=f"Airloop: {cfg.name}", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = server

    @app.post("/invocations")
    async def invocations() -> Response:  # documented here; requests are answered by _Invocations below
        raise AssertionError("POST /invocations is served by the ASGI fast path")

    @app.get("/health")
    async def health() -> Response:
        cur = server.current
        doc = {
            "status": "ok" if cur else "no_model",
            "pipeline": cfg.name,
            "model": cfg.registered_model_name,
            "model_version": cur.version if cur else None,
            "model_run_id": cur.run_id if cur else None,
            "scoring_path": None if cur is None else ("compiled" if cur.compiled is not None else "sklearn"),
            "shadow_version": server.shadow.version if server.shadow else None,
            "log_queue_rows": server.buffered_rows,
        }
        return JSONResponse(doc, status_code=200 if cur else 503)

    @app.get("/ping")
    async def ping() -> Response:  # MLflow's scoring server answers /ping; keep its health checks working
        return await health()

    @app.get("/version")
    async def version() -> Response:
        cur = server.current
        return JSONResponse({"model": cfg.registered_model_name, "model_version": cur.version if cur else None})

    @app.get("/metrics")
    async def metrics() -> Response:
        cur = server.current
        text = server.metrics.render(cfg.name, cur.version if cur else None, server.buffered_rows)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    from airloop.serving.explain import add_explain_route

    add_explain_route(app, server, cfg)  # POST /explain: SHAP on request, off the /invocations fast path
    return _Invocations(app, server)


_JSON_HEADERS = [(b"content-type", b"application/json")]
_ERROR_CODES = {413: "RESOURCE_LIMIT_EXCEEDED", 503: "SERVICE_UNAVAILABLE", 500: "INTERNAL_ERROR"}


class _Invocations:
    """ASGI front of the FastAPI app: ``POST /invocations`` is answered here directly (no routing,
    dependency solving or response classes on the hot path); everything else, lifespan included, goes to
    FastAPI. ``state`` and ``server`` are the app's state and its :class:`ModelServer`."""

    def __init__(self, app: Any, server: ModelServer):
        self.app, self.server, self.state = app, server, app.state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/invocations" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        server = self.server
        status, doc = 200, None
        ctype = next((v for k, v in scope["headers"] if k == b"content-type"), b"application/json")
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if not ctype.startswith(b"application/json"):
            status, message_text = 415, f"header 'Content-Type': expected application/json, found {ctype.decode()!r}"
        else:
            try:
                doc = await server.invoke(body)
            except PayloadError as err:
                status, message_text = err.status, str(err)
            except Exception as err:  # the model itself failed on valid-looking input
                log.exception("prediction failed")
                status, message_text = 500, str(err)
        if status != 200:
            doc = {"error_code": _ERROR_CODES.get(status, "BAD_REQUEST"), "message": message_text}
        payload = json.dumps(doc).encode()
        server.metrics.observe(status, time.perf_counter() - started)
        headers = [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def app_from_env():
    """App factory for ``uvicorn --factory`` with several workers: the pipeline comes from AIRLOOP_SERVE_PIPELINE."""
    from airloop.config import get_pipeline

    return create_app(get_pipeline(os.environ["AIRLOOP_SERVE_PIPELINE"]))


def run(
    cfg: PipelineConfig, *, host: str = "127.0.0.1", port: int = 5001, workers: int = 1, log_level: str = "warning"
) -> None:
    """Serve until interrupted (``airloop serve``). Several workers each load the model and poll the alias."""
    import uvicorn

    opts = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": False,
        "loop": "uvloop",
        "http": "httptools",
    }
    if workers > 1:
        os.environ["AIRLOOP_SERVE_PIPELINE"] = cfg.name
        uvicorn.run("airloop.serving.app:app_from_env", factory=True, workers=workers, **opts)
    else:
        uvicorn.run(create_app(cfg), **opts)
