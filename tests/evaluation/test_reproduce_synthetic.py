"""scripts/reproduce_synthetic.py: summary statistics, table and chart; a smoke run of the real pipeline."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("reproduce_synthetic", REPO / "scripts" / "reproduce_synthetic.py")
repro = importlib.util.module_from_spec(_spec)
sys.modules["reproduce_synthetic"] = repro  # dataclasses resolve annotations through sys.modules
_spec.loader.exec_module(repro)


def test_summary_table_and_chart(tmp_path: Path) -> None:
    rows = [{"variant": "random", "miou": v} for v in (0.10, 0.12, 0.14)]
    rows += [{"variant": "synthetic-vfm", "miou": v} for v in (0.30, 0.34)]
    summary = repro.summarise(rows, ["random", "slic", "synthetic-vfm"])
    assert [s["variant"] for s in summary] == ["random", "synthetic-vfm"]  # variants without runs are left out
    assert summary[0]["mean"] == pytest.approx(0.12) and summary[0]["std"] == pytest.approx(0.02)
    assert summary[1]["std"] == pytest.approx(np.std([0.30, 0.34], ddof=1))
    table = repro.markdown_table(summary, repro.Budget(), 60.0)
    assert "| random | 12.00 ± 2.00 | 10.00 / 12.00 / 14.00 |  |" in table
    assert "| synthetic-vfm | 32.00 ± 2.83 | 30.00 / 34.00 | +20.00 |" in table
    one = repro.summarise([{"variant": "random", "miou": 0.5}], ["random"])
    assert math.isnan(one[0]["std"]) and "n/a" in repro.markdown_table(one, repro.Budget(), 1.0)
    repro.bar_chart(summary, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_variant_configs() -> None:
    b = repro.Budget()
    multi = repro.pretrain_config(repro.VARIANTS["multi-source"], b, seed=2)
    data = multi["data"]
    assert [d["label"] for d in data] == ["synthetic", "synthetic-64"]
    assert data[1]["options"]["beams"] == 2 * data[0]["options"]["beams"]
    assert data[1]["options"]["intensity_scale"] == 1.0 and data[0]["options"].get("intensity_scale", 255.0) == 255.0
    assert data[1]["options"]["seed"] != data[0]["options"]["seed"]  # another part of the world
    assert multi["objective"]["weights"] == {"vfm": 1.0, "tmp": 1.0, "p2s": 1.0, "cdp": 1.0}
    slic = repro.pretrain_config(repro.VARIANTS["slic"], b, seed=0)
    assert slic["superpixels"] == {"source": "slic", "options": {}} and slic["pipeline"]["temporal"] is False
    assert slic["objective"]["weights"] == {"vfm": 1.0, "tmp": 0.0, "p2s": 0.0, "cdp": 0.0}
    assert multi["train"]["seed"] == 2 and slic["train"]["steps"] == multi["train"]["steps"] == b.pretrain_steps
    assert slic["train"]["batch_size"] == multi["train"]["batch_size"]  # same budget for every variant
    from largead.config import from_dict
    from largead.training.pretrain import PretrainConfig

    for cfg in (multi, slic):  # the generated mappings are valid pretraining configs
        assert from_dict(PretrainConfig, cfg).model.backbone == b.backbone


@pytest.mark.slow
def test_smoke_run(tmp_path: Path) -> None:
    res = repro.main(repro.parse_args(["--smoke", "--output-dir", str(tmp_path), "--seeds", "0",
                                       "--variants", "random", "slic", "synthetic-vfm+temporal"]))
    assert [s["variant"] for s in res["summary"]] == ["random", "slic", "synthetic-vfm+temporal"]
    assert all(0.0 <= r["miou"] <= 1.0 for r in res["runs"])
    assert (tmp_path / "results.png").is_file() and "synthetic-vfm+temporal" in (tmp_path / "results.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["seeds"] == [0]
    assert (tmp_path / "synthetic-vfm+temporal" / "seed0" / "pretrain" / "encoder" / "model.safetensors").is_file()
