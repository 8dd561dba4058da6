"""scripts/bf16_agreement.py: the README's bf16-vs-fp32 agreement table, run on a small saved encoder and on the
same weights converted to a SLidR-layout checkpoint."""

from __future__ import annotations

import pytest
import torch
from script_modules import load_script

from largead import LargeADConfig, LargeADEncoder


@pytest.fixture(scope="module")
def agreement():
    return load_script("bf16_agreement")


def test_agreement_rows_for_the_encoder_and_its_official_conversion(agreement, tmp_path, capsys):
    torch.manual_seed(0)
    folder = tmp_path / "enc"
    LargeADEncoder(LargeADConfig(backbone="minkunet14")).save_pretrained(folder)
    agreement.main([str(folder), "--official", "--scans", "1", "--cases", "nuscenes32", "--threads", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "nuScenes" in line]
    assert len(rows) == 2 and "converted SLidR-layout checkpoint" in rows[1]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        points, low, p1, mean, max_abs = int(cells[2].replace(",", "")), *map(float, cells[3:7])
        assert points > 40_000  # every point of the generated 32-beam scan
        assert 0.99 < low <= p1 <= mean <= 1.0 + 1e-6 and 0.0 < max_abs < 0.1


def test_unknown_case_is_refused(agreement, capsys):
    with pytest.raises(SystemExit):
        agreement.main(["unused-model", "--cases", "waymo64"])
    assert "--cases: unknown ['waymo64']" in capsys.readouterr().err
