"""airloop.serving (app, server, payload, compiled, servinglog) and airloop.monitoring.shadow: MLflow-compatible
payloads, 4xx answers that name the field, health and metrics, the lake log, shadow mode, and an alias change
while clients keep sending requests (none dropped, versions never mixed)."""

from __future__ import annotations

import json
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest
from fixtures.servekit import CHURN_ROW, RunningServer, churn_cfg, ingest_validated, simulate_small, train_version

ROWS = [
    CHURN_ROW,
    {
        "tenure_months": 60,
        "monthly_charges": None,
        "total_charges": 3000.0,
        "support_calls": 0,
        "senior": 1,
        "contract": "two_year",
        "payment_method": "credit_card",
        "internet_service": "dsl",
        "region": "west",
    },
]
COLUMNS = list(ROWS[0])


@pytest.fixture(scope="module")
def served(mlflow_store, tmp_path_factory):
    """Champion v1 and a second version v2 (not promoted) of one pipeline."""
    data = tmp_path_factory.mktemp("serve_data")
    written = simulate_small(data, days=1)
    cfg = churn_cfg("srv", data, serving={"poll_interval_s": 0.2, "log_flush_s": 0.2, "max_request_rows": 50})
    ingest_validated(cfg, written["history_day"])
    v1 = train_version(cfg, written["history_day"])
    v2 = train_version(cfg, written["history_day"], promote=False, seed=11)  # another run, another version
    return {"cfg": cfg, "v1": v1, "v2": v2, "written": written}


def expected(cfg, version: str, rows: list[dict]) -> tuple[list, list]:
    import mlflow.sklearn

    model = mlflow.sklearn.load_model(f"models:/{cfg.registered_model_name}/{version}")
    frame = pd.DataFrame(rows).astype({"monthly_charges": float})
    proba = model.predict_proba(frame)
    return model.predict(frame).tolist(), proba.max(axis=1).tolist()


def test_mlflow_payload_formats_give_the_champions_predictions(served):
    from airloop.serving.app import create_app

    cfg = served["cfg"]
    want_pred, want_prob = expected(cfg, served["v1"]["version"], ROWS)
    bodies = {
        "dataframe_split": {"dataframe_split": {"columns": COLUMNS, "data": [[r[c] for c in COLUMNS] for r in ROWS]}},
        "dataframe_records": {"dataframe_records": ROWS},
        "instances": {"instances": ROWS},
        "instances as lists": {"instances": [[r[c] for c in COLUMNS] for r in ROWS]},
        "extra columns ignored": {"dataframe_records": [{**r, "customer_id": f"X{i}"} for i, r in enumerate(ROWS)]},
    }
    with RunningServer(create_app(cfg, log_requests=False)) as url, httpx.Client(base_url=url) as client:
        for name, body in bodies.items():
            r = client.post("/invocations", json=body)
            assert r.status_code == 200, (name, r.text)
            doc = r.json()
            assert doc["predictions"] == want_pred, name
            assert np.allclose(doc["probabilities"], want_prob), name
            assert doc["model_version"] == served["v1"]["version"]
            assert all(pid.startswith("srv:serve-") for pid in doc["prediction_ids"])


BAD = [
    (b"{not json", "application/json", 400, "body: expected a JSON object, found invalid JSON"),
    (b"[1, 2]", "application/json", 400, "expected a JSON object with one of"),
    (b"{}", "application/json", 400, "exactly one of the fields"),
    (json.dumps({"dataframe_records": ROWS, "instances": ROWS}), "application/json", 400, "exactly one of"),
    (json.dumps({"rows": ROWS}), "application/json", 400, "found keys ['rows']"),
    (
        json.dumps({"dataframe_split": {"columns": "tenure_months", "data": []}}),
        "application/json",
        400,
        "field 'dataframe_split.columns': expected a list of column names",
    ),
    (
        json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [[1, 2]]}}),
        "application/json",
        400,
        "field 'dataframe_split.data[0]': expected a list of 9 values",
    ),
    (json.dumps({"dataframe_records": []}), "application/json", 400, "expected at least one row"),
    (
        json.dumps({"dataframe_records": [1]}),
        "application/json",
        400,
        "field 'dataframe_records[0]': expected an object",
    ),
    (
        json.dumps({"dataframe_records": [{k: v for k, v in ROWS[0].items() if k != "contract"}]}),
        "application/json",
        422,
        "missing required column(s) ['contract']",
    ),
    (
        json.dumps({"dataframe_records": [ROWS[0], {**ROWS[1], "tenure_months": "ten"}]}),
        "application/json",
        422,
        "column 'tenure_months' (row 1): expected a finite number or null, found 'ten' (str)",
    ),
    (
        json.dumps({"dataframe_records": [{**ROWS[0], "contract": 7}]}),
        "application/json",
        422,
        "column 'contract' (row 0): expected a string or null, found 7 (int)",
    ),
    (json.dumps({"dataframe_records": ROWS * 26}), "application/json", 413, "expected at most 50 rows, found 52"),
    (b"tenure_months\n3\n", "text/csv", 415, "header 'Content-Type': expected application/json, found 'text/csv'"),
]


def test_bad_payloads_are_answered_4xx_naming_the_field(served):
    from airloop.serving.app import create_app

    with RunningServer(create_app(served["cfg"], log_requests=False)) as url, httpx.Client(base_url=url) as client:
        for body, ctype, status, message in BAD:
            r = client.post("/invocations", content=body, headers={"content-type": ctype})
            assert r.status_code == status, (message, r.text)
            assert message in r.json()["message"], r.json()["message"]
        # the server still answers good requests afterwards
        assert client.post("/invocations", json={"dataframe_records": ROWS}).status_code == 200
        metrics = client.get("/metrics").text
    assert 'airloop_requests_total{pipeline="srv",status="422"} 3' in metrics
    assert 'airloop_requests_total{pipeline="srv",status="200"} 1' in metrics


def test_health_metrics_and_the_request_log_in_the_lake(served):
    from airloop.serving.app import create_app
    from airloop.serving.servinglog import read_serving_log
    from airloop.store.lake import Lake

    cfg = served["cfg"]
    lake = Lake(cfg.name)
    before = len(read_serving_log(lake))
    ids = []
    with RunningServer(create_app(cfg)) as url, httpx.Client(base_url=url) as client:
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["model_version"] == served["v1"]["version"]
        assert health["model_run_id"] == served["v1"]["run_id"]
        assert health["scoring_path"] == "compiled"  # checked against the sklearn pipeline at load time
        for _ in range(3):
            body = {"dataframe_records": [{**r, "customer_id": f"C{i}"} for i, r in enumerate(ROWS)]}
            ids += client.post("/invocations", json=body).json()["prediction_ids"]
        metrics = client.get("/metrics").text
    assert 'airloop_predictions_total{pipeline="srv"} 6' in metrics
    assert "airloop_request_seconds_bucket" in metrics and 'airloop_model_version{pipeline="srv"} 1' in metrics
    log = read_serving_log(lake)  # the server flushed its buffer on shutdown
    assert len(log) == before + 6
    mine = log[log["prediction_id"].isin(ids)]
    assert len(mine) == 6 and set(mine["model_version"]) == {served["v1"]["version"]}
    assert set(mine["entity_id"]) == {"C0", "C1"}
    assert json.loads(mine["features"].iloc[0])["contract"] == "month-to-month"


def test_shadow_challenger_is_logged_not_returned_and_reported(served):
    from airloop.monitoring.shadow import shadow_report
    from airloop.serving.app import create_app
    from airloop.serving.servinglog import read_serving_log
    from airloop.store import promotions
    from airloop.store.lake import Lake

    cfg = served["cfg"].model_copy(update={"serving": served["cfg"].serving.model_copy(update={"shadow": True})})
    promotions.set_challenger(cfg, served["v2"]["version"])
    with RunningServer(create_app(cfg)) as url, httpx.Client(base_url=url) as client:
        assert client.get("/health").json()["shadow_version"] == served["v2"]["version"]
        for _ in range(5):
            doc = client.post("/invocations", json={"dataframe_records": ROWS}).json()
            assert doc["model_version"] == served["v1"]["version"] and set(doc) == {
                "predictions",
                "probabilities",
                "model_version",
                "prediction_ids",
                "low_confidence",
            }
    report = shadow_report(cfg, lake=Lake(cfg.name))
    assert report["rows"] == 10
    assert report["shadow_versions"] == [served["v2"]["version"]]
    assert report["champion_versions"] == [served["v1"]["version"]]
    assert 0.0 <= report["agreement"] <= 1.0 and "agreement" in report["summary"]
    want_v2, _ = expected(cfg, served["v2"]["version"], ROWS)
    assert report["uri"].endswith(".json")
    shadowed = read_serving_log(Lake(cfg.name)).dropna(subset=["shadow_prediction"])
    assert shadowed["shadow_prediction"].tail(2).tolist() == want_v2


def test_alias_change_while_serving_drops_no_request(served):
    from airloop.serving.app import create_app
    from airloop.store import promotions

    cfg, v1, v2 = served["cfg"], served["v1"]["version"], served["v2"]["version"]
    promotions.promote(cfg, v1, reason="reset", actor="tester")
    results: list[list[tuple[int, str | None]]] = [[] for _ in range(4)]
    stop = threading.Event()

    def client_loop(out, url):
        with httpx.Client(base_url=url, timeout=10) as client:
            deadline = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < deadline:
                r = client.post("/invocations", json={"dataframe_records": ROWS[:1]})
                out.append((r.status_code, r.json().get("model_version")))

    with RunningServer(create_app(cfg, log_requests=False)) as url:
        threads = [threading.Thread(target=client_loop, args=(out, url)) for out in results]
        for t in threads:
            t.start()
        time.sleep(0.5)
        promotions.promote(cfg, v2, reason="alias change under load", actor="tester")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(out and out[-1][1] == v2 for out in results):
            time.sleep(0.1)
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(timeout=15)
        metrics = httpx.get(f"{url}/metrics").text
    for out in results:
        statuses = {s for s, _ in out}
        versions = [v for _, v in out]
        assert statuses == {200}, statuses
        assert versions[0] == v1 and versions[-1] == v2
        switch = versions.index(v2)
        assert set(versions[switch:]) == {v2}, "a client saw the old version after the new one"
    assert 'airloop_model_swaps_total{pipeline="srv"} 1' in metrics


def test_compiled_path_matches_the_pipeline_and_refuses_what_it_cannot_reproduce():
    from sklearn.ensemble import HistGradientBoostingClassifier

    from airloop.config import CandidateConfig
    from airloop.model.candidates import build_pipeline
    from airloop.serving.compiled import compile_pipeline
    from airloop.serving.spec import Column

    rng = np.random.default_rng(1)
    n = 300
    X = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "k": rng.integers(0, 5, size=n),
            "c": rng.choice(["a", "b", "c"], size=n),
        }
    )
    X.loc[::7, "x"] = np.nan
    X.loc[::11, "c"] = None
    y = (X["x"].fillna(0) + (X["c"] == "a") > 0.3).astype(int)
    columns = [Column("x", "number", False), Column("k", "number"), Column("c", "string", False)]
    for estimator in ("sklearn.linear_model.LogisticRegression", "sklearn.ensemble.HistGradientBoostingClassifier"):
        model = build_pipeline(
            CandidateConfig(name="m", estimator=estimator), ["x", "k"], ["c"], 0, task="classification"
        )
        model.fit(X, y)
        compiled = compile_pipeline(model, columns, "classification")
        assert compiled is not None, estimator
        rows = {"x": [0.1, None, 3.0], "k": [1, 2, 9], "c": ["b", None, "never-seen"]}
        frame = pd.DataFrame(
            {"x": [0.1, np.nan, 3.0], "k": [1.0, 2.0, 9.0], "c": pd.array(["b", None, "never-seen"], dtype=object)}
        )
        assert np.allclose(compiled.predict_proba(rows), model.predict_proba(frame), atol=1e-12)
    plain = HistGradientBoostingClassifier().fit(X[["x", "k"]], y)  # not an Airloop pipeline: not compiled
    assert compile_pipeline(plain, columns[:2], "classification") is None


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_compiled_and_sklearn_paths_agree_on_random_rows_for_every_default_candidate(task):
    """Every default candidate: the compiled path (numpy preprocessing + native forest / boosting scorer)
    gives the sklearn pipeline's output on random rows (missing numbers, unseen and missing categories)."""
    from airloop.model.candidates import build_pipeline, default_candidates
    from airloop.serving.compiled import compile_pipeline
    from airloop.serving.spec import Column, to_frame

    rng = np.random.default_rng(7)
    n = 400
    X = pd.DataFrame({"x": rng.normal(size=n), "k": rng.integers(0, 50, size=n).astype(float)})
    X["c"] = rng.choice(["a", "b", "c", "d"], size=n)
    X.loc[::7, "x"] = np.nan
    X.loc[::11, "c"] = None
    signal = X["x"].fillna(0) + (X["c"] == "a") + X["k"] / 50
    y = (signal > 0.6).astype(int) if task == "classification" else signal + rng.normal(size=n) * 0.1
    columns = [Column("x", "number", False), Column("k", "number"), Column("c", "string", False)]
    m = 300
    rows = {
        "x": [None if i % 9 == 0 else float(v) for i, v in enumerate(rng.normal(size=m) * 3)],
        "k": [float(v) for v in rng.integers(-20, 80, size=m)],
        "c": [["a", "b", "c", "d", None, "zz"][i] for i in rng.integers(0, 6, size=m)],
    }
    expected_path = {
        "logistic_regression": "compiled+linear",
        "ridge": "compiled+linear",
        "random_forest": "compiled+forest",
        "hist_gradient_boosting": "compiled+hgb",
    }
    for candidate in default_candidates(task):
        model = build_pipeline(candidate, ["x", "k"], ["c"], 0, task=task).fit(X, y)
        compiled = compile_pipeline(model, columns, task)
        assert compiled is not None, candidate.name
        assert compiled.path == expected_path[candidate.name], candidate.name
        frame = to_frame(rows, columns)
        assert np.allclose(compiled.predict(rows), model.predict(frame), rtol=0, atol=1e-6), candidate.name
        if task == "classification":
            got, want = compiled.predict_proba(rows), model.predict_proba(frame)
            assert np.allclose(got, want, rtol=0, atol=1e-6), candidate.name
            one = {c: v[:1] for c, v in rows.items()}  # the 1-row request the server sees most
            assert np.allclose(compiled.predict_proba(one), want[:1], rtol=0, atol=1e-6), candidate.name


def _body(row: dict) -> bytes:
    return json.dumps({"dataframe_records": [row]}).encode()


HOSTILE = [  # (name, body, status, text the message must contain)
    (
        "400-digit integer",
        _body(ROWS[0]).replace(b'"tenure_months": 3', b'"tenure_months": ' + b"9" * 400),
        422,
        "column 'tenure_months' (row 0): expected a finite number or null, found an integer of 400 digits",
    ),
    (
        "5000-digit integer",
        _body(ROWS[0]).replace(b'"support_calls": 5', b'"support_calls": -' + b"7" * 5000),
        422,
        "column 'support_calls' (row 0)",
    ),
    (
        "NaN",
        _body({**ROWS[0], "monthly_charges": float("nan")}),
        422,
        "column 'monthly_charges' (row 0): expected a finite number within",
    ),
    ("1e308", _body({**ROWS[0], "total_charges": 1e308}), 422, "column 'total_charges' (row 0)"),
    ("-1e308", _body({**ROWS[0], "total_charges": -1e308}), 422, "column 'total_charges' (row 0)"),
    (
        "Infinity",
        _body(ROWS[0]).replace(b'"total_charges": 280.0', b'"total_charges": -Infinity'),
        422,
        "column 'total_charges' (row 0)",
    ),
    (
        "nesting 100,000 deep",
        b'{"dataframe_records": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        400,
        "body: expected JSON nested a few levels deep",
    ),
    ("huge integer in a category", _body({**ROWS[0], "contract": 10**40}), 422, "column 'contract' (row 0)"),
]


def test_hostile_values_get_4xx_naming_the_field_and_one_log_line_each(served, caplog):
    from airloop.serving.app import create_app

    assert b'"total_charges": 280.0' in _body(ROWS[0]) and b'"tenure_months": 3' in _body(ROWS[0])
    caplog.set_level("WARNING")
    with RunningServer(create_app(served["cfg"], log_requests=False)) as url, httpx.Client(base_url=url) as client:
        for name, body, status, message in HOSTILE:
            r = client.post("/invocations", content=body, headers={"content-type": "application/json"})
            assert r.status_code == status, (name, r.text[:300])
            assert message in r.json()["message"], (name, r.json()["message"])
        assert client.post("/invocations", json={"dataframe_records": ROWS}).status_code == 200
    mine = [r for r in caplog.records if r.name.startswith("airloop.serving")]
    assert not [r for r in mine if r.exc_info], "a client mistake was logged with a traceback"
    refused = [r for r in mine if "POST /invocations 4" in r.getMessage()]
    assert len(refused) == len(HOSTILE), [r.getMessage()[:120] for r in mine]
    assert all("\n" not in r.getMessage() for r in refused)


def test_a_poisonous_request_fails_only_itself_not_its_micro_batch(served):
    """16 clients send valid rows while 2 send a 400-digit integer: every valid request is answered 200."""
    from airloop.serving.app import create_app

    poison = HOSTILE[0][1]
    good = _body(ROWS[1])
    statuses: dict[str, list[int]] = {"good": [], "poison": []}
    lock = threading.Lock()

    def client_loop(kind: str, body: bytes, url: str):
        with httpx.Client(base_url=url, timeout=30) as client:
            for _ in range(25):
                r = client.post("/invocations", content=body, headers={"content-type": "application/json"})
                with lock:
                    statuses[kind].append(r.status_code)

    with RunningServer(create_app(served["cfg"], log_requests=False)) as url:
        threads = [threading.Thread(target=client_loop, args=("good", good, url)) for _ in range(16)]
        threads += [threading.Thread(target=client_loop, args=("poison", poison, url)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        metrics = httpx.get(f"{url}/metrics").text
    assert statuses["good"] == [200] * 400, {s: statuses["good"].count(s) for s in set(statuses["good"])}
    assert statuses["poison"] == [422] * 50
    batches = int(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("airloop_batches_total")))
    assert batches < 400, "the requests were not micro-batched, so the test proves nothing"


def _raw_exchange(url: str, head: bytes, body_parts: list[bytes], timeout_s: float = 10) -> bytes:
    """Send a request head and body parts on a raw socket, then read the answer (without ending the body)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s) as sock:
        sock.sendall(head)
        for part in body_parts:
            sock.sendall(part)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            pass
        return answer


def test_the_body_limit_is_enforced_while_reading_before_parsing(served):
    from airloop.serving.app import create_app

    cfg = served["cfg"]
    cfg = cfg.model_copy(update={"serving": cfg.serving.model_copy(update={"max_body_bytes": 4096})})
    with RunningServer(create_app(cfg, log_requests=False)) as url:
        # a Content-Length over the limit: refused from the header, the 50 MB are never sent
        head = (
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50000000\r\n\r\n"
        )
        started = time.monotonic()
        answer = _raw_exchange(url, head, [b'{"dataframe_records": ['])
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"expected at most 4096 bytes" in answer and time.monotonic() - started < 5
        # a chunked body: refused once the bytes read pass the limit, while the client is still sending
        head = (
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        piece = b"[" * 1000
        chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        answer = _raw_exchange(url, head, [chunk] * 6)  # 6,000 bytes, and no terminating chunk
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"after reading" in answer
        with httpx.Client(base_url=url) as client:  # bodies under the limit are served as before
            assert client.post("/invocations", json={"dataframe_records": ROWS}).status_code == 200


def test_bearer_token_guards_every_endpoint_but_health(served, monkeypatch):
    from airloop.serving.app import TOKEN_ENV, create_app, serve_token

    cfg = served["cfg"]
    with RunningServer(create_app(cfg, log_requests=False, token="s3cret-token")) as url:
        with httpx.Client(base_url=url) as client:
            body = {"dataframe_records": ROWS}
            assert client.post("/invocations", json=body).status_code == 401
            wrong = client.post("/invocations", json=body, headers={"authorization": "Bearer nope"})
            assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
            assert "expected 'Bearer <token>'" in wrong.json()["message"]
            ok = client.post("/invocations", json=body, headers={"authorization": "Bearer s3cret-token"})
            assert ok.status_code == 200 and len(ok.json()["predictions"]) == 2
            assert client.get("/metrics").status_code == 401 and client.get("/version").status_code == 401
            assert client.get("/metrics", headers={"authorization": "Bearer s3cret-token"}).status_code == 200
            assert client.get("/health").status_code == 200 and client.get("/ping").status_code == 200
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert serve_token(cfg) is None and serve_token(cfg, "from-connection") == "from-connection"
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert serve_token(cfg, "from-connection") == "from-env"


def test_the_serve_token_can_come_from_an_airflow_connection(monkeypatch):
    from airloop.errors import BadInput
    from airloop.orchestration.secrets import connection_password

    monkeypatch.setenv("AIRFLOW_CONN_AIRLOOP_SERVE_TEST", json.dumps({"conn_type": "generic", "password": "tok"}))
    assert connection_password("airloop_serve_test", "serving.auth_connection") == "tok"
    with pytest.raises(BadInput, match="no Airflow Connection 'airloop_serve_missing'"):
        connection_password("airloop_serve_missing", "pipeline 'x': serving.auth_connection")
