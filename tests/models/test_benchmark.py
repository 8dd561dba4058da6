"""scripts/benchmark.py --quick: runs every installed backend on a tiny scan and writes well-formed JSON lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from largead.models.minkowski import minkowski_available

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark.py"
FIELDS = {"backend", "device", "case", "voxels", "mode", "median_ms", "p90_ms", "peak_mem_mb", "peak_mem_method",
          "threads", "variant", "ratio_to_minkowski"}


@pytest.mark.slow
def test_quick_benchmark_json(tmp_path):
    out = tmp_path / "bench.jsonl"
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[1])}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--repeats", "2",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [json.loads(line) for line in out.read_text().splitlines()] == lines
    backends = {(r["backend"], r["device"]) for r in lines}
    assert ("torch", "cpu") in backends
    assert (("minkowski", "cpu") in backends) == minkowski_available()
    assert {r["mode"] for r in lines} == {"forward", "train"}
    for r in lines:
        assert set(r) == FIELDS
        assert r["case"] == "tiny" and r["variant"] == "minkunet14" and r["threads"] == 1
        assert 500 < r["voxels"] < 2000
        assert 0 < r["median_ms"] <= r["p90_ms"] and r["peak_mem_mb"] >= 0
        assert r["peak_mem_method"] == ("cuda_allocated" if r["device"] == "cuda" else "rss")
        if r["backend"] == "minkowski":
            assert r["ratio_to_minkowski"] == 1.0
        elif minkowski_available() and r["device"] == "cpu":
            assert r["ratio_to_minkowski"] > 0
    by_mode = {(r["backend"], r["device"], r["mode"]): r["voxels"] for r in lines}
    assert len(set(by_mode.values())) == 1  # every backend saw the same scan
