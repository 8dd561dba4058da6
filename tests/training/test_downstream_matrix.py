"""The downstream matrix: every downstream config (linear probing and fine-tuning, ten datasets) at every label
fraction of its paper protocol (:func:`largead.training.protocols.downstream_configs`) runs one step of
``training/finetune.py`` on the dataset's official layout and then ``training/evaluate.py`` on its validation split,
changing only the data root, the batch size and the step count. The nuScenes and SemanticKITTI models are also
evaluated under corruption, on the fly (``--corruptions all``) and on the Robo3D copies read by the nuScenes-C /
SemanticKITTI-C readers (``--corrupted-root``).

nuScenes' label fractions keep every k-th *scene* (SLidR's rule), so its runs use ``nuscenes_scenes`` (100 training
scenes of the official train split + 2 validation scenes, LiDAR only); the other datasets use the official-layout
samples (``official_roots``). The fine-tuned encoder starts from a saved random MinkUNet-34 (``--pretrained``) that
carries nuScenes' input statistics, as a nuScenes-pretrained encoder does: the pretrained path (loading,
voxelisation check) runs in every case, and every other dataset is a transfer (its statistics estimated from its
training frames and stored in the fine-tuned model).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from largead.training import evaluate, finetune
from largead.training.protocols import downstream_configs

CASES = downstream_configs()
NUSCENES_NORM = (18.0, 22.0)
"""The pretrained encoder's statistics for nuScenes (intensity mean, std): any fixed pair does."""
ROBUSTNESS = {"finetune-nuscenes": 1, "finetune-semantickitti": 1}
"""The cases whose model is also evaluated under corruption (config -> label fraction): the fine-tuned models Robo3D
evaluates. SemanticKITTI's corrupted evaluations read one validation frame (``--max-frames 1``) to stay quick."""


@pytest.fixture(scope="module")
def random_encoder(tmp_path_factory):
    """A saved random MinkUNet-34 in the downstream protocol's voxelisation (``--pretrained``), with the input
    statistics of a nuScenes-pretrained encoder (``input_norm``)."""
    import torch

    from largead import LargeADConfig, LargeADEncoder

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("random-encoder")
    LargeADEncoder(LargeADConfig(input_norm={"nuscenes": NUSCENES_NORM})).save_pretrained(folder)
    return folder


def _roots(dataset: str, official_roots, nuscenes_scenes) -> Path:
    return nuscenes_scenes["root"] if dataset == "nuscenes" else official_roots[dataset]


def _expected_scenes(nuscenes_scenes, fraction: float) -> list[str]:
    """SLidR's rule, written from ``downstream/dataloader_nuscenes.py`` independently of largead.data.splits: walk
    the scene table in order, count the scenes of the train split from 1, keep those whose count is a multiple of
    ``k = 100 / fraction``."""
    table = json.loads((Path(nuscenes_scenes["root"]) / "v1.0-trainval" / "scene.json").read_text())
    train = set(nuscenes_scenes["train_scenes"])
    k = round(100 / fraction)
    kept, counter = [], 0
    for scene in table:
        if scene["name"] in train:
            counter += 1
            if counter % k == 0:
                kept.append(scene["name"])
    return kept


@pytest.mark.slow
@pytest.mark.parametrize(("config", "mode", "fraction"), CASES, ids=[f"{c}-{f:g}" for c, _, f in CASES])
def test_one_step_then_evaluate(config, mode, fraction, official_roots, nuscenes_scenes, random_encoder, tmp_path):
    from safetensors import safe_open

    from largead.data import get_dataset

    cfg = finetune.load_run_config(finetune.parse_args(["--config", config, "--output-dir", "x"]))
    dataset = cfg.data.name
    root = _roots(dataset, official_roots, nuscenes_scenes)
    out = tmp_path / "run"
    final = finetune.main(finetune.parse_args([
        "--config", config, "--output-dir", str(out), "--root", str(root), "--label-fraction", f"{fraction:g}",
        "--pretrained", str(random_encoder), "--cpu", "batch_size=1", "max_steps=1"]))

    meta = json.loads((final / "segmentation.json").read_text())
    assert (meta["dataset"], meta["mode"], meta["label_fraction"], meta["steps"]) == (dataset, mode, fraction, 1)
    train = get_dataset(dataset, str(root), cfg.data.train_split, **cfg.data.options)
    kept = finetune.training_indices(train, fraction)
    if dataset == "nuscenes":  # every k-th training scene, counted in scene-table order
        assert sorted({train.sequence_of(int(i))[0] for i in kept}) == sorted(_expected_scenes(nuscenes_scenes,
                                                                                              fraction))
    else:  # every k-th sorted training scan, the first included
        assert kept.tolist() == list(range(0, len(train), round(100 / fraction)))
    with safe_open(str(final / "model.safetensors"), "pt") as fh, \
            safe_open(str(random_encoder / "model.safetensors"), "pt") as before:
        moved = not np.array_equal(fh.get_tensor("conv0p1s1.kernel").numpy(),
                                   before.get_tensor("conv0p1s1.kernel").numpy())
        assert moved == (mode == "finetune"), "linear probing must leave the backbone untouched"
    from largead.models.heads import SegmentationModel
    from largead.pretrain.multisource import dataset_intensity_stats

    norm = SegmentationModel.from_pretrained(final).encoder.config.input_norm
    assert norm["nuscenes"] == NUSCENES_NORM  # the pretraining statistics are kept
    if dataset != "nuscenes":  # transfer: the dataset's own statistics, from its training frames
        expected = dataset_intensity_stats(train, cfg.data.norm_frames, kept)
        np.testing.assert_allclose(norm[meta.get("input_norm_key") or dataset], expected, rtol=1e-12)
    shutil.rmtree(out / "checkpoints")  # a MinkUNet-34 checkpoint is 300 MB: keep the disk free

    # evaluation on the validation split, with the reader options the model was trained with (segmentation.json)
    res = evaluate.main(evaluate.parse_args(["--model", str(final), "--root", str(root), "--split", "val", "--cpu"]))
    val = get_dataset(dataset, str(root), "val", **cfg.data.options)
    labelled = sum(int((val[i].labels >= 0).sum()) for i in range(len(val)))  # every labelled point, once
    assert res["num_frames"] == len(val) and res["num_points"] == labelled > 0 and not res["partial"]
    cm = np.asarray(res["confusion_matrix"])
    assert cm.shape == (len(val.class_names),) * 2 and cm.sum() == labelled
    assert 0.0 <= res["miou"] <= 1.0 and 0.0 <= res["accuracy"] <= 1.0
    card = (final / "README.md").read_text()
    assert f"{res['miou'] * 100:.2f}" in card  # written into the model card

    if ROBUSTNESS.get(config) == fraction:
        _robustness(final, dataset, root, official_roots, nuscenes_scenes, res)


def _robustness(final: Path, dataset: str, root: Path, official_roots, nuscenes_scenes, clean: dict) -> None:
    from largead.evaluation.robustness import CORRUPTIONS, SEVERITIES

    limit = [] if dataset == "nuscenes" else ["--max-frames", "1"]
    on_the_fly = evaluate.main(evaluate.parse_args([
        "--model", str(final), "--root", str(root), "--split", "val", "--cpu", "--corruptions", "all",
        "--output", str(final / "eval" / "fly.json"), *limit]))
    corrupted = nuscenes_scenes["nuscenes_c"] if dataset == "nuscenes" else official_roots["semantickitti_c"]
    released = evaluate.main(evaluate.parse_args([
        "--model", str(final), "--root", str(root), "--split", "val", "--cpu", "--corruptions", "all",
        "--corrupted-root", str(corrupted), "--output", str(final / "eval" / "released.json"), *limit]))
    for res in (on_the_fly, released):
        table = res["corruption_miou"]
        assert set(table) == set(CORRUPTIONS) and all(set(v) == set(SEVERITIES) for v in table.values())
        assert all(0.0 <= m <= 1.0 for v in table.values() for m in v.values())
        rob = res["robustness"]
        assert rob["baseline"] is not None and np.isfinite(rob["mce"]) and np.isfinite(rob["mrr"])
    assert released["robustness"]["corruption_source"] == f"released files ({corrupted})"
    assert on_the_fly["robustness"]["corruption_source"] == "on the fly (largead.data.corruptions)"
    if dataset == "nuscenes":  # the whole split: the clean numbers equal the plain evaluation's
        assert on_the_fly["miou"] == pytest.approx(clean["miou"]) and not released["partial"]
