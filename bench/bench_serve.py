"""Serving benchmark: `airloop serve` against `mlflow models serve` (MLflow's scoring server), side by side.

Both serve the same registered model (the demo churn model, trained here through the churn pipeline's stage
functions in a private AIRLOOP_HOME) with 1 worker. A light load generator (8 keep-alive connections driven
by one thread, 1-row `dataframe_split` requests) drives each server in turn for the same time.
Targets: Airloop >= 10x MLflow's throughput, and Airloop p99 < 10 ms.

Writes bench/results/serve.json and serve.md. Run: .venv/bin/python bench/bench_serve.py [--seconds S]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
VENV_BIN = Path(sys.executable).parent
CLIENTS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_demo_model(home: Path) -> tuple[str, str, dict]:
    """Simulate the demo data, then ingest → validate → train (all candidates) → select → register → promote.
    Returns (registered model name, version, one raw row)."""
    os.environ["AIRLOOP_HOME"] = str(home)
    for var in ("MLFLOW_TRACKING_URI", "AIRLOOP_LAKE_URI", "AIRLOOP_ARTIFACT_URI"):
        os.environ.pop(var, None)
    sys.path.insert(0, str(REPO / "plugins"))
    from airloop.config import load_pipeline
    from airloop.data.ingest import ingest_batch
    from airloop.data.validate import validate_batch
    from airloop.demo.simulate import SimulationSpec, simulate
    from airloop.model.candidates import candidate_names
    from airloop.model.plan import plan_initial, prepare_training
    from airloop.model.train import select_best, train_candidate
    from airloop.store import registry
    from airloop.store.lake import Lake

    written = simulate(home / "demo" / "churn", SimulationSpec(days=1))
    cfg = load_pipeline(REPO / "include" / "pipelines" / "churn.yaml")
    day = written["history_day"]
    ingest_batch(cfg, day)
    validate_batch(cfg, day)
    lake = Lake(cfg.name)
    split = prepare_training(cfg, lake, plan_initial(cfg, lake, day))
    best = select_best(cfg, [train_candidate(cfg, name, split) for name in candidate_names(cfg)])
    version = registry.register(cfg, best["model_uri"], best["run_id"])
    registry.promote(cfg, version, reason="benchmark", actor="bench")
    row = lake.read_zone("validated", [day]).iloc[0]
    features = split["numeric"] + split["categorical"]
    raw = {c: (None if row[c] != row[c] else row[c].item() if hasattr(row[c], "item") else row[c]) for c in features}
    print(f"demo model: {cfg.registered_model_name} v{version} ({best['candidate']})", flush=True)
    return cfg.registered_model_name, version, raw


def wait_ready(port: int, path: str, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with code {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server on port {port} not ready within {timeout_s} s")


def load(port: int, body: bytes, seconds: float, warmup_s: float) -> dict:
    """8 concurrent clients on persistent keep-alive connections, driven by one thread with a selector (no
    GIL hand-offs between client threads inflating the measured latency); latencies in ms."""
    request = (
        b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    sel = selectors.DefaultSelector()
    latencies: list[float] = []
    errors = 0
    start_at = time.perf_counter() + warmup_s
    stop_at = start_at + seconds
    conns = []
    for _ in range(CLIENTS):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        state = {"sock": sock, "buf": b"", "t0": time.perf_counter()}
        sock.sendall(request)
        sel.register(sock, selectors.EVENT_READ, state)
        conns.append(state)
    open_conns = len(conns)
    while open_conns:
        for key, _ in sel.select(timeout=30):
            st = key.data
            chunk = st["sock"].recv(65536)
            if not chunk:
                raise RuntimeError("the server closed a keep-alive connection")
            st["buf"] += chunk
            head_end = st["buf"].find(b"\r\n\r\n")
            if head_end < 0:
                continue
            head = st["buf"][:head_end].decode("latin-1")
            length = next(
                (
                    int(line.split(":", 1)[1])
                    for line in head.split("\r\n")
                    if line.lower().startswith("content-length:")
                ),
                None,
            )
            if length is None:
                raise RuntimeError(f"response without Content-Length: {head!r}")
            if len(st["buf"]) < head_end + 4 + length:
                continue
            t1 = time.perf_counter()
            st["buf"] = st["buf"][head_end + 4 + length :]
            if not head.startswith("HTTP/1.1 200"):
                errors += 1
            elif st["t0"] >= start_at:
                latencies.append((t1 - st["t0"]) * 1000)
            if t1 >= stop_at:
                sel.unregister(st["sock"])
                st["sock"].close()
                open_conns -= 1
                continue
            st["t0"] = time.perf_counter()
            st["sock"].sendall(request)
    all_ms = sorted(latencies)
    n = len(all_ms)

    def pct(p: float) -> float:
        return round(all_ms[min(n - 1, int(p * n))], 2) if n else float("nan")

    return {
        "requests": n,
        "errors": errors,
        "req_per_s": round(n / seconds, 1),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
    }


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="airloop-bench-serve-") as tmp:
        home = Path(tmp)
        name, version, row = train_demo_model(home)
        body = json.dumps({"dataframe_split": {"columns": list(row), "data": [list(row.values())]}}).encode()
        env = {
            **os.environ,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRLOOP_HOME": str(home),
            "MLFLOW_TRACKING_URI": f"sqlite:///{home}/mlflow/mlflow.db",
        }
        results = {}
        servers = {
            "airloop": ([str(VENV_BIN / "airloop"), "serve", "churn", "--workers", "1"], "--port", "/health"),
            "mlflow": (
                [
                    str(VENV_BIN / "mlflow"),
                    "models",
                    "serve",
                    "-m",
                    f"models:/{name}/{version}",
                    "--env-manager",
                    "local",
                    "--workers",
                    "1",
                    "--host",
                    "127.0.0.1",
                ],
                "--port",
                "/ping",
            ),
        }
        for label, (cmd, port_flag, ready_path) in servers.items():
            port = free_port()
            log = open(home / f"{label}.log", "w")  # noqa: SIM115 - closed below
            proc = subprocess.Popen(
                [*cmd, port_flag, str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                wait_ready(port, ready_path, proc)
                results[label] = load(port, body, args.seconds, args.warmup)
                print(f"{label:8} {results[label]}", flush=True)
            except Exception:
                log.flush()
                print((home / f"{label}.log").read_text()[-3000:], file=sys.stderr)
                raise
            finally:
                stop(proc)
                log.close()
            if results[label]["errors"] or not results[label]["requests"]:
                print((home / f"{label}.log").read_text()[-3000:], file=sys.stderr)
    a, m = results["airloop"], results["mlflow"]
    ratio = round(a["req_per_s"] / m["req_per_s"], 1) if m["req_per_s"] else None
    doc = {
        "benchmark": "serve",
        "setup": f"demo churn model v{version}, 1 worker each, {CLIENTS} concurrent clients, 1-row dataframe_split "
        f"requests, {args.seconds:.0f} s each after {args.warmup:.0f} s warm-up; load generator on the same machine",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg()},
        "airloop": a,
        "mlflow_models_serve": m,
        "throughput_ratio": ratio,
        "p50_ratio": round(m["p50_ms"] / a["p50_ms"], 1) if a["p50_ms"] else None,
        "targets": {"throughput_ratio_min": 10, "airloop_p99_ms_max": 10},
        "passed": bool(ratio and ratio >= 10 and a["p99_ms"] < 10 and not a["errors"]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps(doc, indent=2) + "\n")
    md = [
        "# Serving benchmark",
        "",
        doc["setup"] + ".",
        "",
        "| server | req/s | p50 ms | p90 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
        *(
            f"| {k} | {r['req_per_s']} | {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | {r['errors']} |"
            for k, r in (("airloop serve", a), ("mlflow models serve", m))
        ),
        "",
        f"Throughput ratio: **{ratio}x** (target >= 10x); Airloop p99 {a['p99_ms']} ms (target < 10 ms): "
        f"{'passed' if doc['passed'] else 'NOT passed'}.",
    ]
    (RESULTS / "serve.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if doc["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
