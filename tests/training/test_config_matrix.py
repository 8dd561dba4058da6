"""The pretraining config matrix on the datasets' official layouts.

The zoo has 81 entries; 80 have a pretraining config (``python -m largead.training.make_configs``), the random
baseline ``largead/minkunet34-random`` has none (nothing is trained). Every one of the 80 is run the way a user with
nuScenes, SemanticKITTI and Waymo on disk runs it, changing only what :func:`dry_run_overrides` changes (data roots,
superpixel roots, batch size, ``teacher.random_init=true``), against the official-layout samples
(``official_roots``) and superpixel maps in each official generator's layout (``official_superpixels``):

- ``test_every_config_builds``: the config is loaded, its datasets opened, its superpixel source resolved (with the
  id-0 rule of the generator that wrote the maps), its teacher built with random weights (each distinct teacher once:
  ViT-L is 300 M parameters) and a first batch holding a sample of every one of its datasets collated;
- ``test_covering_set_pretrains``: a set of configs in which every superpixel source, every teacher and every data
  combination (n, k, w, nkw) appears runs ``training/pretrain.py --config <file> --max-steps 2`` in a subprocess; the
  losses must be finite and the ``encoder/`` it writes must reload and embed a frame of each of its datasets.
  ``minkunet34-seem-nkw`` (the mission's example) is in the set, on nuScenes + SemanticKITTI + Waymo;
- ``test_every_config_pretrains`` (marker ``exhaustive``, deselected by default; ``pytest -m exhaustive``): all 80
  the same way.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from largead.training import make_configs, pretrain
from largead.zoo import DATA, REGISTRY

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "training" / "pretrain.py"  # the launcher users run
CONFIGS = sorted(n.removesuffix(".yaml") for n in make_configs.all_configs())
TEACHERS = ("resnet50", "vit-s", "vit-b", "vit-l")
SOURCES = ("slic", "sam", "seem", "xdecoder", "openseed")
# What id 0 means in each source's maps as the samples hold them: SLIC's manifest (0 is a segment), Seal's SAM maps
# (the largest mask and the unmasked pixels: a segment), SEEM / X-Decoder (void), SuperFlow's OpenSeeD (a segment).
ZERO_IS_SEGMENT = {"slic": True, "sam": True, "seem": False, "xdecoder": False, "openseed": True}

COVERING = ("minkunet34-seem-nkw", "minkunet34-slic-k-vit-l", "minkunet34-openseed-k-resnet50",
            "minkunet34-sam-n-vit-s", "minkunet34-xdecoder-w-vit-s")
"""Every source, teacher and data combination at least once (checked below), the costly teachers on the fewest
cameras: ViT-L and the dilated ResNet-50 (output stride 4) on SemanticKITTI's single camera, ViT-S on nuScenes' six
and Waymo's five of two sizes, ViT-B on all three datasets (the mission's example)."""


def test_the_configs_are_the_zoo_minus_the_random_baseline():
    pretrained = {n.split("/", 1)[1] for n, info in REGISTRY.items() if info.config_file is not None}
    assert len(REGISTRY) == 81 and set(CONFIGS) == pretrained and len(CONFIGS) == 80
    assert {n for n in REGISTRY if REGISTRY[n].config_file is None} == {"largead/minkunet34-random"}


def test_the_covering_set_covers():
    infos = [REGISTRY[f"largead/{n}"] for n in COVERING]
    assert {i.source for i in infos} == set(SOURCES)
    assert {i.teacher for i in infos} == set(TEACHERS)
    assert {i.data for i in infos} == set(DATA) == {"n", "k", "w", "nkw"}


# --------------------------------------------------------------------------------------------------- build test
class _Opened:
    """Datasets and their intensity statistics, opened once per (reader, root, split, options)."""

    def __init__(self) -> None:
        self.datasets: dict[str, object] = {}
        self.norms: dict[str, list[float]] = {}

    def open(self, cfg):
        from largead.data import get_dataset

        out, norms = [], {}
        for d in cfg.data:
            key = json.dumps([d.name, d.root, d.split, d.options], sort_keys=True)
            if key not in self.datasets:
                self.datasets[key] = get_dataset(d.name, d.root, d.split, **d.options)
                one = pretrain.PretrainConfig(name="x", data=[d], norm_frames=cfg.norm_frames, normalize_inputs=True)
                self.norms[key] = pretrain._input_norm(one, [self.datasets[key]], [d.name])[d.name]
            out.append(self.datasets[key])
            norms[d.label or d.name] = self.norms[key]
        return out, norms


@pytest.mark.parametrize("teacher", TEACHERS)
def test_every_config_builds(teacher, dry_run_overrides, official_samples, tmp_path):
    """The 20 configs of one teacher: built as pretrain.py builds them, up to a collated first batch."""
    from largead.pretrain.data import PretrainDataset, collate_pretrain
    from largead.pretrain.temporal import SegmentCache
    from largead.superpixels import get_source

    names = [n for n in CONFIGS if REGISTRY[f"largead/{n}"].teacher == teacher]
    assert len(names) == 20
    opened, cache = _Opened(), SegmentCache(tmp_path / "segments")
    built = built_cfg = None
    failures = []
    for name in names:
        try:
            cfg = pretrain.load_pretrain_config(name, dry_run_overrides(name))
            info = REGISTRY[f"largead/{name}"]
            assert cfg.teacher.name == teacher and cfg.teacher.random_init and cfg.zoo_name == info.name
            assert [d.name for d in cfg.data] == list(DATA[info.data])
            datasets, norms = opened.open(cfg)
            for d, ds in zip(cfg.data, datasets):  # the config's own reader options put the cameras on
                assert ds.load_cameras is not False and len(ds[0].cameras) == official_samples[d.name].cameras
            labels = [d.label or d.name for d in cfg.data]
            sources = [get_source(cfg.superpixels.source, **{**cfg.superpixels.options, **d.superpixels})
                       for d in cfg.data]
            assert all(s.zero_is_segment == ZERO_IS_SEGMENT[info.source] for s in sources), name
            if built is None:  # each distinct teacher is built once: every config of this teacher asks for this one
                built = pretrain.build_teacher(cfg.teacher, cfg.model.out_channels, datasets)
                built_cfg = cfg.teacher
                assert built.random_init and built.weights == "random"
            assert cfg.teacher == built_cfg
            data = PretrainDataset(pretrain.pairing_datasets(cfg, datasets), sources, cfg.pipeline, cache,
                                   seed=cfg.train.seed, names=labels)
            firsts = np.cumsum([0, *data.sizes()])[:-1]
            samples = [data[int(i)] for i in firsts]  # one sample of every dataset of the config
            batch = collate_pretrain(samples, grid=cfg.model.grid, feature_mode=cfg.model.feature_mode,
                                     input_norm=norms, datasets=labels)
            assert batch.num_scans == len(datasets) and batch.datasets == labels
            assert batch.scan_dataset.tolist() == list(range(len(datasets))) * 2  # frame t, then t + 1
            crop = tuple(cfg.pipeline.augment.crop_size)
            assert isinstance(batch.images, torch.Tensor) and tuple(batch.images.shape[2:]) == crop
            assert len(batch.images) == sum(official_samples[d.name].cameras for d in cfg.data)
            for b in range(len(datasets)):  # every scan has pairs that land on a superpixel
                assert bool((batch.pair_superpixel[batch.voxels.coords[batch.pair_voxel, 0] == b] >= 0).any())
            assert bool((batch.voxel_segment >= 0).any())
            if not ZERO_IS_SEGMENT[info.source]:  # void pixels are ignored, segments kept
                assert bool((batch.pixel_superpixel < 0).any()) and bool((batch.pixel_superpixel >= 0).any())
        except Exception as err:  # report every config that fails, not only the first
            failures.append(f"{name}: {type(err).__name__}: {err}")
    assert not failures, "\n".join(failures)


# ------------------------------------------------------------------------------------------------ running them
def _pretrain(config: str, out: Path, overrides: list[str], extra: tuple[str, ...] = ()) -> dict:
    """``training/pretrain.py --config <file> --max-steps 2`` in a subprocess; returns the step log."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "LARGEAD_CACHE": str(out / "cache")}
    path = make_configs.CONFIG_DIR / f"{config}.yaml"
    cmd = [sys.executable, str(SCRIPT), "--config", str(path), "--output-dir", str(out / "run"), "--max-steps", "2",
           *extra, *overrides]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert res.returncode == 0, f"{config}: pretrain.py exited {res.returncode}:\n{res.stderr[-3000:]}"
    return [json.loads(line) for line in (out / "run" / "losses.jsonl").read_text().splitlines()]


def _check_run(config: str, out: Path, log: list[dict], official_samples) -> None:
    from largead import LargeADEncoder
    from largead.data import get_dataset

    assert [r["step"] for r in log] == [1, 2], config
    for r in log:
        assert all(math.isfinite(r[k]) for k in ("loss", "vfm", "tmp", "p2s", "cdp")), (config, r)
        assert r["vfm"] > 0, (config, r)
    encoder = LargeADEncoder.from_pretrained(out / "run" / "encoder").eval()
    card = (out / "run" / "encoder" / "README.md").read_text()
    assert "random_init" in card and f"largead/{config}" not in card.split("---")[1]  # never labelled as the zoo entry
    cfg = pretrain.load_pretrain_config(config)
    assert set(encoder.config.input_norm) == {d.name for d in cfg.data}
    for d in cfg.data:  # a frame of each of its datasets, straight from the official layout (LiDAR only)
        s = official_samples[d.name]
        frame = get_dataset(s.dataset, s.root, d.split, **{**s.options, "cameras": False})[0]
        feats = encoder.embed(frame.points[:, :4], dataset=d.name)
        assert feats.shape == (len(frame.points), encoder.config.out_channels), (config, d.name)
        assert bool(torch.isfinite(feats).all()) and torch.allclose(feats.norm(dim=1), torch.ones(1), atol=1e-4)
    shutil.rmtree(out / "run")  # a 150 MB encoder and a 450 MB checkpoint per run: keep the disk free (80 runs)


@pytest.mark.slow
@pytest.mark.parametrize("config", COVERING)
def test_covering_set_pretrains(config, dry_run_overrides, official_samples, tmp_path):
    log = _pretrain(config, tmp_path, dry_run_overrides(config))
    _check_run(config, tmp_path, log, official_samples)


@pytest.mark.exhaustive
@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_pretrains(config, dry_run_overrides, official_samples, tmp_path):
    log = _pretrain(config, tmp_path, dry_run_overrides(config))
    _check_run(config, tmp_path, log, official_samples)
