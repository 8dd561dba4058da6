"""``training/pretrain.py --profile``: the step breakdown of a config, built as a normal run builds it, printed as a
table with every section row, and nothing written into ``--output-dir``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from largead.training import pretrain

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "training" / "pretrain.py"


def _run(*argv: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LARGEAD_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *argv], env=env, capture_output=True, text=True,
                          timeout=900, check=False)


def _table(text: str) -> dict[str, tuple[float, float]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3 and cells[0] != "section":
            rows[cells[0]] = (float(cells[1]), float(cells[2].rstrip("%")))
    return rows


def test_profile_prints_every_section_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    res = _run("--config", "synthetic-tiny", "--output-dir", str(out), "--profile", "1", "train.batch_size=1",
               cache=tmp_path / "cache")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _table(res.stdout)
    assert list(rows) == [*pretrain.PROFILE_ROWS, "other", "step"], res.stdout
    for name in ("data loading", "temporal segments", "point-pixel pairing", "augmentation", "collate + voxelisation",
                 "teacher forward", "3D forward", "superpixel pooling", "losses", "backward", "optimiser step"):
        assert rows[name][0] > 0, (name, res.stdout)  # every section of the step ran and was timed
    step = rows["step"][0]
    assert sum(ms for name, (ms, _) in rows.items() if name != "step") == pytest.approx(step, abs=0.1 * len(rows))
    assert "1 step(s) timed after 1 warm-up" in res.stdout and "num_workers forced to 0" in res.stdout
    assert "overlap" in res.stdout
    assert not out.exists()  # nothing written into --output-dir


def test_profile_without_output_dir_and_default_steps(tmp_path):
    # "--profile key=value": the flag without N (default steps), the override still applied
    res = _run("--config", "synthetic-tiny", "--profile", "model.backbone=minkunet14", "--profile-clock", "cpu",
               cache=tmp_path / "cache")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"{pretrain.PROFILE_STEPS} step(s) timed" in res.stdout and "CPU time of this process" in res.stdout
    assert set(pretrain.PROFILE_ROWS) <= set(_table(res.stdout))


def test_profile_argument_errors():
    with pytest.raises(SystemExit) as err:
        pretrain.parse_args(["--config", "synthetic-tiny"])  # neither --output-dir nor --profile
    assert err.value.code == 2
    with pytest.raises(SystemExit):
        pretrain.parse_args(["--config", "synthetic-tiny", "--profile", "0"])
    args = pretrain.parse_args(["--config", "synthetic-tiny", "--profile", "a.b=1"])
    assert args.profile == pretrain.PROFILE_STEPS and args.overrides == ["a.b=1"] and args.output_dir is None
    assert pretrain.parse_args(["--config", "x", "--profile", "3"]).profile == 3
