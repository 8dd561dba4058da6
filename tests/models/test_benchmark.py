"""scripts/benchmark.py --quick: runs every installed backend and precision on a tiny scan, writes well-formed JSON
lines and a Markdown table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from largead.models.minkowski import minkowski_available

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark.py"
FIELDS = {"backend", "device", "precision", "case", "voxels", "points", "mode", "median_ms", "p90_ms", "runs",
          "peak_mem_mb", "peak_mem_method", "threads", "variant", "ratio_to_minkowski"}


@pytest.mark.slow
def test_quick_benchmark_json(tmp_path):
    out = tmp_path / "bench.jsonl"
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[1])}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--repeats", "2", "--rounds", "1",
                           "--precision", "fp32,bf16", "--out", str(out), "--table"], capture_output=True, text=True,
                          env=env, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "# machine:" in proc.stderr and "native bf16" in proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [json.loads(line) for line in out.read_text().splitlines()] == lines
    keys = {(r["backend"], r["device"], r["precision"]) for r in lines}
    assert {("torch", "cpu", "float32"), ("torch", "cpu", "bfloat16")} <= keys
    assert (("minkowski", "cpu", "float32") in keys) == minkowski_available()
    assert {r["mode"] for r in lines} == {"forward", "train", "embed"}
    for r in lines:
        assert set(r) == FIELDS
        assert r["case"] == "tiny" and r["variant"] == "minkunet14" and r["threads"] == 1
        assert 500 < r["voxels"] < 2000 and r["points"] >= r["voxels"] and r["runs"] == 2
        assert 0 < r["median_ms"] <= r["p90_ms"] and r["peak_mem_mb"] >= 0
        assert r["peak_mem_method"] == ("cuda_allocated" if r["device"] == "cuda" else "rss")
        if r["backend"] == "minkowski":
            assert r["ratio_to_minkowski"] == 1.0 and r["precision"] == "float32"
        elif minkowski_available() and r["device"] == "cpu":
            assert r["ratio_to_minkowski"] > 0
    assert len({r["voxels"] for r in lines}) == 1  # every backend saw the same scan
    table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert table[0].startswith("| case | voxels | mode | backend | precision |") and len(table) == len(lines) + 2
