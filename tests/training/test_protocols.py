"""largead.training.protocols: the papers' downstream protocols, one table, and the configs that follow it."""

from __future__ import annotations

import pytest

from largead.data.splits import skip_ratio
from largead.training import finetune
from largead.training.protocols import (
    EVALUATION_ONLY,
    PROTOCOLS,
    config_name,
    downstream_configs,
    label_fractions,
)

CASES = downstream_configs()


def test_every_dataset_has_both_configs_and_its_protocol():
    from largead.training import CONFIG_DIR

    assert len(PROTOCOLS) == 10 and set(EVALUATION_ONLY) == {"nuscenes_c", "semantickitti_c"}
    names = {p.stem for p in CONFIG_DIR.glob("*.yaml") if p.stem.startswith(("finetune-", "linear-probe-"))}
    expected = {f"{m}-{d}" for d in PROTOCOLS for m in ("finetune", "linear-probe")}
    assert expected <= names and names - expected == {"finetune-synthetic", "linear-probe-synthetic"}
    fractions = {(c, f) for c, _, f in CASES}
    assert {f for c, f in fractions if c == "finetune-nuscenes"} == {1, 5, 10, 25, 100}
    assert ("linear-probe-nuscenes", 100) in fractions and ("finetune-waymo", 1) in fractions
    assert {f for c, f in fractions if c == "finetune-semanticposs"} == {50, 100}
    for config, mode, _fraction in CASES:  # each config's own default is one of its protocol's fractions
        cfg = finetune.load_run_config(finetune.parse_args(["--config", config, "--output-dir", "x"]))
        assert cfg.mode == mode and cfg.data.name == config.split("-", 2 if mode == "linear_probe" else 1)[-1]
        assert cfg.data.label_fraction in {f for c, _, f in CASES if c == config}, config


def test_table_facts():
    """Spot checks against youquanl/Segment-Any-Point-Cloud README.md ("Benchmark", "Downstream Generalization")."""
    assert PROTOCOLS["nuscenes"].results["seal"]["lp"] == 44.95 and PROTOCOLS["nuscenes"].results["random"]["1"] == 30.3
    assert PROTOCOLS["synth4d"].results["slidr"]["1"] == 63.10
    assert PROTOCOLS["daps3d"].results["seal"] == {"50": 81.88, "100": 85.90}
    assert {d for d, p in PROTOCOLS.items() if p.hyperparameters == "slidr"} == {"nuscenes", "semantickitti"}
    for p in PROTOCOLS.values():  # every fraction is one SLidR's rule can select, and every column has numbers
        assert all(skip_ratio(f) >= 1 for f in (*p.linear_probe, *p.finetune))
        columns = {*(["lp"] if p.linear_probe else []), *(f"{f:g}" for f in p.finetune)}
        assert all(set(r) == columns for r in p.results.values()), p.dataset
    assert label_fractions("waymo", "linear_probe") == (100,)  # not in any paper: all labels, ours
    assert len(CASES) == 30


def test_evaluation_only_and_unknown_names():
    with pytest.raises(KeyError, match="evaluation-only: evaluate a nuscenes model on it"):
        config_name("nuscenes_c", "finetune")
    with pytest.raises(KeyError, match="no downstream protocol for 'kitti'"):
        label_fractions("kitti", "finetune")
    assert EVALUATION_ONLY["semantickitti_c"] == "semantickitti"
