"""scripts/reproduce_synthetic.py: paired statistics against independent oracles, the rows' configs, the job claims,
the report's tables and charts, and a smoke run of the real pipeline that goes through every code path."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from script_modules import load_script

repro = load_script("reproduce_synthetic")


# ---------------------------------------------------------------------------------------------------- statistics
def test_paired_against_hand_computed_values() -> None:
    a = {0: 0.30, 1: 0.35, 2: 0.31, 3: 0.40, 9: 0.99}  # seed 9 has no partner: left out
    b = {0: 0.28, 1: 0.30, 2: 0.32, 3: 0.33, 7: 0.0}
    res = repro.paired(a, b)
    d = np.array([0.02, 0.05, -0.01, 0.07])
    assert res["seeds"] == [0, 1, 2, 3] and res["diffs"] == pytest.approx(d.tolist())
    sd = math.sqrt(((d - d.mean()) ** 2).sum() / 3)
    assert res["mean"] == pytest.approx(0.0325) and res["sd"] == pytest.approx(sd)
    t975_df3 = 3.182446305  # Student t quantile from a printed table (df 3, two-sided 95 %)
    assert res["ci_high"] - res["mean"] == pytest.approx(t975_df3 * sd / 2, rel=1e-6)
    assert res["ci_low"] == pytest.approx(2 * res["mean"] - res["ci_high"])
    from scipy.stats import ttest_rel

    assert res["p_t"] == pytest.approx(ttest_rel([a[s] for s in range(4)], [b[s] for s in range(4)]).pvalue)
    # sign test: 3 wins, 1 loss -> two-sided exact binomial p = 2 * (1 + 4) / 16
    assert (res["wins"], res["losses"]) == (3, 1) and res["p_sign"] == pytest.approx(10 / 16)


def test_paired_edge_cases() -> None:
    assert repro.paired({0: 0.1}, {1: 0.2}) is None  # no common seed
    one = repro.paired({0: 0.3}, {0: 0.1})
    assert one["n"] == 1 and one["mean"] == pytest.approx(0.2) and math.isnan(one["p_t"]) and math.isnan(one["ci_low"])
    tie = repro.paired({0: 0.3, 1: 0.5}, {0: 0.3, 1: 0.5})
    assert (tie["wins"], tie["losses"]) == (0, 0) and math.isnan(tie["p_sign"]) and math.isnan(tie["p_t"])
    six = repro.paired({s: 0.5 for s in range(6)}, {s: 0.4 - 0.01 * s for s in range(6)})
    assert six["p_sign"] == pytest.approx(2 / 64)  # 6 of 6 wins: the smallest two-sided sign-test p with 6 seeds


def test_holm_adjustment() -> None:
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06
    assert repro.holm([0.01, 0.04, 0.03, math.nan])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(repro.holm([0.01, 0.04, 0.03, math.nan])[3])
    assert repro.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


# ---------------------------------------------------------------------------------------------------- the rows
def test_rows_and_references() -> None:
    v = repro.VARIANTS
    assert repro.MAIN_ROWS[0] == "random" and repro.MAIN_ROWS[-1] == "supervised"
    assert all(v[n].ref in v for n in v if v[n].ref)  # every reference is a row
    assert (v["vfm-sam"].granularity, v["vfm-seem"].granularity) == ("sam", "seem")
    assert [v[n].calibration_error for n in repro.CALIBRATION_ROWS] == [0.0, 0.05, 0.10, 0.25, 0.50]
    # each '+' row adds exactly one thing to its reference
    for name, added in (("vfm-seem+tmp", "tmp"), ("vfm-seem+tmp+p2s", "p2s"), ("multi", "multi"),
                        ("multi+cdp", "cdp")):
        ref = v[v[name].ref]
        assert getattr(v[name], added) and not getattr(ref, added)
        assert {k: x for k, x in vars(v[name]).items() if k not in (added, "title", "ref")} == \
               {k: x for k, x in vars(ref).items() if k not in (added, "title", "ref")}


def test_variant_configs(tmp_path: Path) -> None:
    from largead.config import from_dict
    from largead.training.pretrain import PretrainConfig

    b = repro.Budget()
    expected = {"slic": (0, 0, 0), "vfm-sam": (0, 0, 0), "vfm-seem": (0, 0, 0), "vfm-seem+tmp": (1, 0, 0),
                "vfm-seem+tmp+p2s": (1, 1, 0), "multi": (1, 1, 0), "multi+cdp": (1, 1, 1)}
    for name, (tmp, p2s, cdp) in expected.items():
        cfg = repro.pretrain_config(repro.VARIANTS[name], b, seed=3, root=tmp_path)
        assert cfg["objective"]["weights"] == {"vfm": 1.0, "tmp": float(tmp), "p2s": float(p2s), "cdp": float(cdp)}
        assert cfg["pipeline"]["temporal"] is bool(tmp or p2s)
        assert len(cfg["data"]) == (2 if name.startswith("multi") else 1)
        assert cfg["train"]["seed"] == 3 and cfg["train"]["steps"] == b.pretrain_steps
        assert cfg["train"]["batch_size"] == b.pretrain_batch  # same budget for every row
        assert cfg["teacher"]["options"]["cache_dir"] == str(tmp_path.resolve() / "teacher_cache")
        assert cfg["segment_cache"] == str(tmp_path.resolve() / "fixed" / "segment_cache")
        parsed = from_dict(PretrainConfig, cfg)  # a valid pretraining config of this library
        assert parsed.model.backbone == b.backbone and all(d.calibration_error == 0 for d in parsed.data)
    slic = repro.pretrain_config(repro.VARIANTS["slic"], b, seed=0)
    assert slic["superpixels"] == {"source": "slic", "options": {}}
    sam = repro.pretrain_config(repro.VARIANTS["vfm-sam"], b, seed=0)
    assert sam["superpixels"] == {"source": "synthetic-vfm", "options": {"granularity": "sam"}}
    multi = repro.pretrain_config(repro.VARIANTS["multi+cdp"], b, seed=0)
    a, second = multi["data"]
    assert second["options"]["beams"] == 2 * a["options"]["beams"] and second["options"]["intensity_scale"] == 1.0
    assert second["options"]["seed"] != a["options"]["seed"] and a["options"].get("intensity_scale", 255.0) == 255.0
    cal = from_dict(PretrainConfig, repro.pretrain_config(repro.VARIANTS["multi+cdp@cal25"], b, seed=0))
    assert [d.calibration_error for d in cal.data] == [0.25, 0.25]  # both sensors miscalibrated
    with pytest.raises(ValueError, match="no pretraining"):
        repro.pretrain_config(repro.VARIANTS["random"], b, seed=0)


def test_supervised_bound_budget() -> None:
    from largead.config import load_config
    from largead.training.finetune import FinetuneConfig, resolve_config_path

    b = repro.Budget()
    samples = b.pretrain_steps * b.pretrain_batch + b.probe_steps * b.probe_batch
    assert b.supervised_steps() * b.probe_batch >= samples > (b.supervised_steps() - 1) * b.probe_batch
    odd = repro.Budget(pretrain_steps=3, pretrain_batch=3, probe_steps=2, probe_batch=2)
    assert odd.supervised_steps() == 7  # 13 samples at batch 2, rounded up
    cfg = load_config(FinetuneConfig, resolve_config_path("finetune-synthetic"), repro.supervised_overrides(b))
    assert cfg.mode == "finetune" and cfg.max_steps == b.supervised_steps() and cfg.batch_size == b.probe_batch
    assert cfg.optim.lr == b.supervised_lr and cfg.head_lr == b.probe_lr and cfg.model.backbone == b.backbone
    from largead.trainer import scaled_lr

    assert scaled_lr(cfg.optim, cfg.batch_size) == b.supervised_lr  # no batch scaling


def test_claims(tmp_path: Path) -> None:
    run = tmp_path / "fixed" / "slic" / "seed0"
    assert repro.claim(run) and (run / ".claim").read_text() == str(os.getpid())
    assert repro.claim(run)  # this process holds it already
    (run / ".claim").write_text("1")  # pid 1 is alive (init): another process's claim
    assert not repro.claim(run)
    import subprocess

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / ".claim").write_text(gone.stdout.strip())  # a finished process: the claim is stale
    assert repro.claim(run) and (run / ".claim").read_text() == str(os.getpid())


def test_jobs_are_seed_major() -> None:
    assert repro.jobs(["a", "b"], [0, 1]) == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]


# -------------------------------------------------------------------------------------------------------- report
def _rows() -> list[dict]:
    rows = [{"label": "fixed", "variant": "random", "seed": s, "miou": m} for s, m in enumerate((0.10, 0.12, 0.14))]
    rows += [{"label": "fixed", "variant": "slic", "seed": s, "miou": m} for s, m in enumerate((0.20, 0.21, 0.25))]
    rows += [{"label": "old", "variant": "slic", "seed": s, "miou": m} for s, m in enumerate((0.18, 0.20, 0.20))]
    return rows


def test_summary_and_tables() -> None:
    rows = _rows()
    summary = repro.summarise(rows, ["random", "vfm-sam", "slic"], "fixed")
    assert [s["variant"] for s in summary] == ["random", "slic"]  # rows without runs are left out
    assert summary[0]["mean"] == pytest.approx(0.12) and summary[0]["std"] == pytest.approx(0.02)
    table = repro.markdown_table(summary, repro.Budget(), 60.0)
    assert "| random | 12.00 ± 2.00 | 10.00 / 12.00 / 14.00 |  |" in table
    assert "| slic | 22.00 ± 2.65 | 20.00 / 21.00 / 25.00 | +10.00 |" in table
    one = repro.summarise([{"variant": "random", "seed": 0, "miou": 0.5}], ["random"])
    assert math.isnan(one[0]["std"]) and "n/a" in repro.markdown_table(one, repro.Budget(), 1.0)
    # the old label did not run 'random': it shares the fixed label's (the row does not depend on the objectives)
    assert repro.by_seed(rows, "old", "random") == repro.by_seed(rows, "fixed", "random")
    assert repro.by_seed(rows, "old", "vfm-sam") == {}
    main = repro.main_table(rows, ["fixed", "old"])
    slic_line = next(ln for ln in main.splitlines() if ln.startswith("| slic:"))
    cells = [c.strip() for c in slic_line.strip("|").split("|")]
    assert cells[1] == "random" and cells[2] == "22.00 ± 2.65 (n=3)" and cells[4] == "19.33 ± 1.15 (n=3)"
    assert cells[3].startswith("+10.00 [") and cells[5].startswith("+7.33 [")
    assert cells[6].startswith("+2.67 [")  # fixed - old, paired: (2, 1, 5) pp
    versus = repro.label_comparisons(rows)
    assert [c["a"] for c in versus] == ["slic"] and versus[0]["diffs"] == pytest.approx([0.02, 0.01, 0.05])
    comps = repro.comparisons(rows)
    assert [(c["kind"], c["a"], c["b"]) for c in comps] == [("ref", "slic", "random")]
    assert comps[0]["p_holm"] == pytest.approx(comps[0]["p_t"])  # one comparison: Holm changes nothing
    text = repro.comparison_table(comps)
    assert "| slic − random | 3 | +10.00 / +9.00 / +11.00 |" in text and "3+ / 0−" in text


def test_charts(tmp_path: Path) -> None:
    rows = _rows() + [{"label": "fixed", "variant": n, "seed": s, "miou": 0.3 - 0.01 * k}
                      for k, n in enumerate(repro.CALIBRATION_ROWS) for s in range(3)]
    repro.bar_chart(rows, ["fixed", "old"], tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert repro.calibration_chart(rows, "fixed", tmp_path / "cal.png")
    assert (tmp_path / "cal.png").read_bytes()[:4] == b"\x89PNG"
    assert not repro.calibration_chart(_rows(), "fixed", tmp_path / "none.png") and not (tmp_path / "none.png").exists()


# ------------------------------------------------------------------------------------------------------ smoke run
@pytest.mark.slow
def test_smoke_run(tmp_path: Path) -> None:
    """Every code path on a tiny world: probe-only, single-source L_vfm, the full model with calibration error
    (temporal, multi-source, L_cdp), the supervised bound, a second label, the report with charts and Figure 4,
    and resumption (a second call runs nothing)."""
    variants = ["random", "vfm-sam", "multi+cdp", "multi+cdp@cal25", "supervised"]
    res = repro.main(repro.parse_args(["--smoke", "--output-dir", str(tmp_path), "--seeds", "0", "--no-report",
                                       "--variants", *variants]))
    assert [(r["variant"], r["seed"]) for r in res["ran"]] == [(v, 0) for v in variants]
    assert all(0.0 <= r["miou"] <= 1.0 and r["label"] == "fixed" for r in res["ran"])
    run = tmp_path / "fixed" / "multi+cdp@cal25" / "seed0"
    cfg = json.loads((run / "pretrain" / "run_config.json").read_text())
    assert [d["calibration_error"] for d in cfg["data"]] == [0.25, 0.25] and cfg["objective"]["weights"]["cdp"] == 1.0
    assert (run / "pretrain" / "encoder" / "model.safetensors").is_file()
    assert any((tmp_path / "fixed" / "segment_cache").rglob("*.npz"))  # temporal segments shared by the label's runs
    assert not (run / "pretrain" / "checkpoints").exists() and not (run / ".claim").exists()  # pruned, released
    sup = json.loads((tmp_path / "fixed" / "supervised" / "seed0" / "supervised" / "run_config.json").read_text())
    assert sup["mode"] == "finetune" and sup["pretrained"] is None
    import largead

    assert res["ran"][0]["library"]["path"] == str(Path(largead.__file__).resolve().parent.parent)  # provenance

    again = repro.main(repro.parse_args(["--smoke", "--output-dir", str(tmp_path), "--seeds", "0", "--label", "old",
                                         "--variants", "random", "multi+cdp"]))
    assert [r["variant"] for r in again["ran"]] == ["random", "multi+cdp"] and again["labels"] == ["fixed", "old"]
    assert [c["a"] for c in again["label_comparisons"]] == ["multi+cdp"]
    md = (tmp_path / "results.md").read_text()
    assert "fixed − old" in md and "multi+cdp@cal25" in md and "supervised" in md
    assert (tmp_path / "reproduce_synthetic.png").is_file() and (tmp_path / "reproduce_synthetic_calibration.png").is_file()
    assert any(p.endswith("figure4_car.png") for p in again["pictures"])
    assert len(json.loads((tmp_path / "results.json").read_text())["runs"]) == len(variants) + 2
    resumed = repro.main(repro.parse_args(["--smoke", "--output-dir", str(tmp_path), "--seeds", "0", "--no-report",
                                           "--variants", *variants]))
    assert resumed["ran"] == []  # every job had finished: nothing runs twice
