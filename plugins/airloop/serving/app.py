"""Online serving: ``airloop serve NAME``, an HTTP JSON API in front of the champion (FastAPI + uvicorn).

:func:`create_app` takes a pipeline config and returns the ASGI app. ``POST /invocations`` takes MLflow
scoring-server bodies (``dataframe_split``, ``dataframe_records``, ``instances``/``inputs``) and answers
``{"predictions": [...], "probabilities": [...], "model_version": "3", "prediction_ids": [...],
"low_confidence": [...]}`` (``predictions`` is what MLflow's server returns, so its clients work unchanged),
plus ``"coverage"`` and ``"prediction_sets"`` (classification) or ``"prediction_intervals"`` (regression)
when the version was calibrated at the gate (split conformal, :mod:`airloop.model.conformal`).
``GET /health`` and Prometheus-style ``GET /metrics`` complete the API.

The request path is lean: ``POST /invocations`` is answered by a small ASGI front before FastAPI's routing,
and the body is checked against a column spec computed once per model version, never per request. The
batching, alias following and logging are :class:`airloop.serving.server.ModelServer`'s.

The front also guards the API: with a token (``token=``, see :func:`serve_token`) every endpoint but
``/health`` and ``/ping`` needs ``Authorization: Bearer <token>`` (401 otherwise); a body larger than
``serving.max_body_bytes`` gets 413 from its ``Content-Length`` or as soon as the bytes read pass the limit,
before anything is parsed; each client mistake is logged as one line.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from typing import Any

from airloop.config import PipelineConfig
from airloop.serving.payload import PayloadError
from airloop.serving.server import ModelServer, log_failure
from airloop.store.lake import Lake

log = logging.getLogger(__name__)


TOKEN_ENV = "AIRLOOP_SERVE_TOKEN"
OPEN_PATHS = ("/health", "/ping")  # liveness checks (compose, load balancers) need no token


def serve_token(cfg: PipelineConfig, connection_token: str | None = None) -> str | None:
    """The bearer token ``airloop serve`` requires: ``$AIRLOOP_SERVE_TOKEN``, else the password of the Airflow
    Connection named by ``serving.auth_connection`` (looked up by the caller and passed as
    ``connection_token``), else None (no authentication)."""
    return os.environ.get(TOKEN_ENV) or connection_token or None


def create_app(cfg: PipelineConfig, *, lake: Lake | None = None, log_requests: bool = True, token: str | None = None):
    """The FastAPI app serving ``cfg``'s champion; ``app.state.server`` is its :class:`ModelServer`. With
    ``token``, every endpoint but /health and /ping requires ``Authorization: Bearer <token>``."""
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
            "estimator_path": None if cur is None else cur.path,
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
    return _Invocations(app, server, token)


_JSON_HEADERS = [(b"content-type", b"application/json")]
_ERROR_CODES = {
    401: "UNAUTHENTICATED",
    413: "RESOURCE_LIMIT_EXCEEDED",
    503: "SERVICE_UNAVAILABLE",
    500: "INTERNAL_ERROR",
}


async def _answer(send: Any, status: int, doc: dict, extra: list | None = None) -> None:
    payload = json.dumps(doc).encode()
    headers = [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class _Invocations:
    """ASGI front of the FastAPI app: ``POST /invocations`` is answered here directly (no routing,
    dependency solving or response classes on the hot path); everything else, lifespan included, goes to
    FastAPI. ``state`` and ``server`` are the app's state and its :class:`ModelServer`."""

    def __init__(self, app: Any, server: ModelServer, token: str | None = None):
        self.app, self.server, self.state = app, server, app.state
        self._bearer = f"Bearer {token}".encode() if token else None

    def _authorized(self, scope: dict) -> bool:
        if self._bearer is None or scope["path"] in OPEN_PATHS:
            return True
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        return hmac.compare_digest(given, self._bearer)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._authorized(scope):
            log.warning("%s %s 401: missing or wrong bearer token", scope["method"], scope["path"])
            self.server.metrics.observe(401, 0.0)
            doc = {"error_code": "UNAUTHENTICATED", "message": "header 'Authorization': expected 'Bearer <token>'"}
            await _answer(send, 401, doc, [(b"www-authenticate", b"Bearer")])
            return
        if scope["path"] != "/invocations" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        server = self.server
        status, doc, close = 200, None, False
        ctype = next((v for k, v in scope["headers"] if k == b"content-type"), b"application/json")
        body = await self._read_body(scope, receive)
        if isinstance(body, tuple):  # refused while reading: (status, message)
            (status, message_text), close = body, True
        elif not ctype.startswith(b"application/json"):
            status, message_text = 415, f"header 'Content-Type': expected application/json, found {ctype.decode()!r}"
        else:
            try:
                doc = await server.invoke(body)
            except PayloadError as err:
                status, message_text = err.status, str(err)
            except Exception as err:  # the model itself failed on valid-looking input
                log_failure("prediction failed", err)
                status, message_text = 500, str(err)
        if status != 200:
            if status < 500:  # a client mistake: one line, never a traceback
                log.warning("POST /invocations %d: %s", status, message_text[:300])
            doc = {"error_code": _ERROR_CODES.get(status, "BAD_REQUEST"), "message": message_text}
        server.metrics.observe(status, time.perf_counter() - started)
        await _answer(send, status, doc, [(b"connection", b"close")] if close else None)

    async def _read_body(self, scope: dict, receive: Any) -> bytes | tuple[int, str]:
        """The request body, or (status, message) when it is over ``serving.max_body_bytes``: judged from
        Content-Length before reading, and again on the bytes read so far (chunked bodies), so a huge body
        is never read whole or parsed."""
        limit = self.server.cfg.serving.max_body_bytes
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        too_big = f"body: expected at most {limit} bytes (serving.max_body_bytes), found "
        if declared is not None:
            if not declared.isdigit():
                return 400, f"header 'Content-Length': expected a number of bytes, found {declared[:40].decode()!r}"
            if int(declared) > limit:
                return 413, too_big + f"Content-Length {int(declared)}"
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return 400, "body: the client disconnected before sending it whole"
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return 413, too_big + f"more than that after reading {size} bytes"
            chunks.append(chunk)
            more = message.get("more_body", False)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def app_from_env():
    """App factory for ``uvicorn --factory`` with several workers: the pipeline comes from AIRLOOP_SERVE_PIPELINE
    and the token, if any, from AIRLOOP_SERVE_TOKEN."""
    from airloop.config import get_pipeline

    return create_app(get_pipeline(os.environ["AIRLOOP_SERVE_PIPELINE"]), token=os.environ.get(TOKEN_ENV) or None)


def run(
    cfg: PipelineConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 5001,
    workers: int = 1,
    log_level: str = "warning",
    token: str | None = None,
) -> None:
    """Serve until interrupted (``airloop serve``). Several workers each load the model and poll the alias;
    with ``token`` each requires it as a bearer token."""
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
        if token:
            os.environ[TOKEN_ENV] = token
        uvicorn.run("airloop.serving.app:app_from_env", factory=True, workers=workers, **opts)
    else:
        uvicorn.run(create_app(cfg, token=token), **opts)
