"""Ingest benchmark: a 10M-row CSV (about 1 GB), Airloop's streaming ingest beside the anchor, measured in one run.

Anchor: the naive way, ``pandas.read_csv`` of the whole file, then ``DataFrame.to_parquet``. Airloop does more
work for the same input: it also streams the raw bytes into the lake (with their sha256), parses the event-time
column, adds the batch column and writes the manifest. Each side runs in its own fresh Python process, so peak
RSS (``ru_maxrss`` of that process) is its own, imports included. The CSV is generated into a temporary folder
and deleted afterwards; nothing large is committed.

    .venv/bin/python bench/bench_ingest.py [--rows 10000000]

Writes bench/results/ingest.json and ingest.md. Target: Airloop's peak RSS under 1 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
RSS_TARGET_MIB = 1024
DAY = "2026-01-05"

AIRLOOP = """
import json, resource, sys, time
from airloop.config import parse_pipeline
from airloop.data.ingest import ingest_batch
from airloop.store.lake import Lake
path, lake_dir = sys.argv[1], sys.argv[2]
cfg = parse_pipeline({"name": "bench", "source": {"uri": "file://" + path}, "target": "churned",
                      "task": "classification", "id_column": "customer_id", "event_time_column": "event_time"})
t0 = time.perf_counter()
out = ingest_batch(cfg, "DAY", lake=Lake("bench", root="file://" + lake_dir))
seconds = time.perf_counter() - t0
print(json.dumps({"rows": out["rows"], "seconds": seconds,
                  "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
""".replace("DAY", DAY)

ANCHOR = """
import json, resource, sys, time
import pandas as pd
path, out_dir = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
frame = pd.read_csv(path)
frame.to_parquet(out_dir + "/anchor.parquet", index=False)
seconds = time.perf_counter() - t0
print(json.dumps({"rows": len(frame), "seconds": seconds,
                  "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def generate_csv(path: Path, rows: int, chunk: int = 1_000_000) -> int:
    """Write a churn-like CSV of ``rows`` rows in chunks (memory stays at one chunk); returns its size."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv

    rng = np.random.default_rng(0)
    contracts = np.array(["month-to-month", "one_year", "two_year"])
    payments = np.array(["electronic_check", "mailed_check", "bank_transfer", "credit_card"])
    regions = np.array(["north", "south", "east", "west"])
    start = np.datetime64(f"{DAY}T00:00:00")
    options = pcsv.WriteOptions(include_header=True, quoting_style="none")
    with pa.OSFile(str(path), "wb") as sink:
        writer = None
        for offset in range(0, rows, chunk):
            n = min(chunk, rows - offset)
            idx = np.arange(offset, offset + n)
            tenure = rng.integers(0, 73, n)
            monthly = rng.uniform(15, 150, n).round(2)
            table = pa.table(
                {
                    "customer_id": pa.array(np.char.add("CUST-", np.char.zfill(idx.astype(str), 10))),
                    "event_time": pa.array((start + (idx % 86_400).astype("timedelta64[s]")).astype(str)).cast(
                        pa.string()
                    ),
                    "tenure_months": tenure,
                    "monthly_charges": monthly,
                    "total_charges": (monthly * np.maximum(tenure, 1)).round(2),
                    "contract": contracts[rng.integers(0, 3, n)],
                    "payment_method": payments[rng.integers(0, 4, n)],
                    "region": regions[rng.integers(0, 4, n)],
                    "support_calls": rng.integers(0, 16, n),
                    "churned": rng.integers(0, 2, n),
                }
            )
            if writer is None:
                writer = pcsv.CSVWriter(sink, table.schema, write_options=options)
            writer.write_table(table)
        writer.close()
    return path.stat().st_size


def measure(script: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}
    env.pop("AIRLOOP_LAKE_URI", None)
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=3600, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["rows_per_s"] = result["rows"] / result["seconds"]
    result["peak_rss_mib"] = result["peak_rss_kib"] / 1024
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="airloop-bench-") as tmp:
        csv = Path(tmp) / f"bench_{DAY}.csv"
        t0 = time.perf_counter()
        size = generate_csv(csv, args.rows)
        print(f"generated {args.rows} rows, {size / 2**20:.0f} MiB in {time.perf_counter() - t0:.1f} s", flush=True)
        (Path(tmp) / "lake").mkdir()
        airloop = measure(AIRLOOP, str(csv), str(Path(tmp) / "lake"))
        print(f"airloop: {airloop['rows_per_s']:,.0f} rows/s, peak RSS {airloop['peak_rss_mib']:.0f} MiB", flush=True)
        anchor = measure(ANCHOR, str(csv), tmp)
        print(f"anchor:  {anchor['rows_per_s']:,.0f} rows/s, peak RSS {anchor['peak_rss_mib']:.0f} MiB", flush=True)
    assert airloop["rows"] == anchor["rows"] == args.rows, (airloop["rows"], anchor["rows"])
    report = {
        "benchmark": "ingest",
        "rows": args.rows,
        "csv_mib": round(size / 2**20, 1),
        "airloop": {k: round(v, 2) for k, v in airloop.items()},
        "anchor": {"name": "pandas.read_csv + DataFrame.to_parquet", **{k: round(v, 2) for k, v in anchor.items()}},
        "ratios": {
            "peak_rss_airloop_over_anchor": round(airloop["peak_rss_mib"] / anchor["peak_rss_mib"], 3),
            "rows_per_s_airloop_over_anchor": round(airloop["rows_per_s"] / anchor["rows_per_s"], 3),
        },
        "target": {"peak_rss_mib_below": RSS_TARGET_MIB, "met": airloop["peak_rss_mib"] < RSS_TARGET_MIB},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ingest.json").write_text(json.dumps(report, indent=2) + "\n")
    r = report["ratios"]
    (RESULTS / "ingest.md").write_text(
        f"# Ingest benchmark ({report['measured_at']})\n\n"
        f"{args.rows:,} rows, {report['csv_mib']:.0f} MiB CSV, {os.cpu_count()} CPUs, one run, each side in its own "
        "process.\n\n"
        "| | rows/s | peak RSS (MiB) | seconds |\n|---|---:|---:|---:|\n"
        f"| Airloop streaming ingest (raw copy + sha256 + staged Parquet) | {airloop['rows_per_s']:,.0f} | "
        f"{airloop['peak_rss_mib']:.0f} | {airloop['seconds']:.1f} |\n"
        f"| anchor: pandas.read_csv + to_parquet | {anchor['rows_per_s']:,.0f} | {anchor['peak_rss_mib']:.0f} | "
        f"{anchor['seconds']:.1f} |\n"
        f"| **ratio Airloop / anchor** | **{r['rows_per_s_airloop_over_anchor']:.2f}x** | "
        f"**{r['peak_rss_airloop_over_anchor']:.2f}x** | |\n\n"
        f"Target: Airloop's peak RSS under {RSS_TARGET_MIB} MiB: "
        f"**{'met' if report['target']['met'] else 'MISSED'}**.\n"
    )
    print(f"wrote {RESULTS / 'ingest.json'} and ingest.md")
    return 0 if report["target"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
