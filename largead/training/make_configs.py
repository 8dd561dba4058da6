"""Write the paper-scale pretraining configs: one small YAML per zoo entry, inheriting ``_base.yaml``.

    python -m largead.training.make_configs          # (re)writes training/configs/minkunet34-*.yaml
    python -m largead.training.make_configs --check  # exit 1 if a committed file differs from what would be written

The names, superpixel sources, datasets and teachers come from the zoo (:mod:`largead.zoo`), the encoder from the
entry's :class:`~largead.LargeADConfig` (the paper's encoder: ``LargeADConfig``'s defaults, so the configs carry no
``model:`` block). Data roots (``data/<dataset>``) and superpixel roots
(``data/superpixels/<dataset>/superpixels_<source>/<camera token>.png``) are conventions: override them with
``data.0.root=...`` on the command line, or symlink the folders.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from largead.fileio import atomic_write_text
from largead.models.encoder import LargeADConfig
from largead.training import CONFIG_DIR
from largead.zoo import DATA, REGISTRY, ModelInfo

# Every pretraining dataset with its cameras on (SemanticKITTI's reader has them off by default) and its
# pretraining split: nuScenes' is SLidR's (the 700 training scenes minus the 100 it holds out for parameter search).
DATASET_OPTIONS = {"nuscenes": "{version: v1.0-trainval, cameras: true}", "semantickitti": "{cameras: true}",
                   "waymo": "{cameras: true}"}
DATASET_SPLITS = {"nuscenes": "pretrain", "semantickitti": "train", "waymo": "train"}
# SLIC and SAM maps are written by scripts/generate_superpixels.py (read back as "precomputed" PNGs); SEEM,
# X-Decoder and OpenSeeD by their official scripts. What id 0 means is each source's own rule
# (largead/superpixels/sources.py), so the configs do not set pipeline.superpixel_ignore_zero.
SUPERPIXELS = {
    "slic": ("precomputed", "{kind: slic}"),
    "sam": ("precomputed", "{kind: sam}"),
    "seem": ("seem", "{}"),
    "xdecoder": ("xdecoder", "{}"),
    "openseed": ("openseed", "{}"),
}
MOCO_CHECKPOINT = "data/teachers/moco_v2_800ep_pretrain.pth.tar"
"""Where the -resnet50 configs expect SLidR's MoCo v2 teacher (override teacher.options.checkpoint=...)."""
# The recipe follows the teacher. ResNet-50: SLidR's (_base.yaml: SGD 0.5 for a global batch of 4, cosine, 50
# epochs, crops 224 x 416). DINOv2: SuperFlow's, the LargeAD group's released DINOv2 + MinkUNet-34 pretraining
# (configs/_base_/schedules/pretrain.py: AdamW 0.01, wd 0.01, one-cycle with 20% warm-up, 100 epochs, for a global
# batch of 32 = 4 per GPU x 8 GPUs), with crops of 224 x 448 (multiples of the ViT's 14-pixel patches).
DINOV2_RECIPE = [
    "optim:",
    "  name: adamw",
    "  lr: 0.01",
    "  base_batch_size: 32",
    "  weight_decay: 0.01",
    "  scheduler: onecycle",
    "  pct_start: 0.2",
    "train:",
    "  epochs: 100",
]


def render(info: ModelInfo) -> tuple[str, str]:
    """(file name, YAML text) of one zoo entry."""
    short = info.short_name
    name, options = SUPERPIXELS[info.source]
    if info.config != LargeADConfig():
        raise ValueError(f"{info.name}: its encoder is not LargeADConfig's defaults; give the generated config a "
                         "model: block")
    lines = [
        f"# Generated from the zoo entry {info.name} by `python -m largead.training.make_configs`; do not edit.",
        f"# {info.source} superpixels, data {info.data}, teacher {info.teacher}.",
        "base: _base.yaml",
        f"name: {short}",
        f"zoo_name: {info.name}",
        "superpixels:",
        f"  source: {name}",
        f"  options: {options}",
        "teacher:",
        f"  name: {info.teacher}",
    ]
    if info.teacher == "resnet50":
        lines += [f"  options: {{checkpoint: {MOCO_CHECKPOINT}}}"]
    else:
        lines += [*DINOV2_RECIPE, "pipeline:", "  augment: {crop_size: [224, 448]}"]
    lines += ["data:"]
    for ds in DATA[info.data]:
        lines += [
            f"  - name: {ds}",
            f"    root: data/{ds}",
            f"    split: {DATASET_SPLITS[ds]}",
            f"    options: {DATASET_OPTIONS[ds]}",
            "    ratio: 1.0",
            f"    superpixels: {{root: data/superpixels/{ds}}}",
        ]
    return f"{short}.yaml", "\n".join(lines) + "\n"


def all_configs() -> dict[str, str]:
    """``{file name: YAML text}`` of every pretrained zoo entry (all but the random baseline)."""
    return dict(render(info) for info in REGISTRY.values() if info.config_file is not None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make_configs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare with the files on disk")
    args = parser.parse_args(argv)
    configs = all_configs()
    stale = [n for n, text in configs.items()
             if not (CONFIG_DIR / n).is_file() or (CONFIG_DIR / n).read_text() != text]
    if args.check:
        for n in stale:
            print(f"stale or missing: {n}")
        return 1 if stale else 0
    for n in stale:
        atomic_write_text(CONFIG_DIR / n, configs[n])
    print(f"{len(configs)} configs ({len(stale)} written) in {CONFIG_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
