#!/usr/bin/env python
"""The step breakdown of ``training/pretrain.py --profile`` for the synthetic configs and for paper configs on the
official-layout samples, one torch thread, the process's CPU time (steady on a shared machine):

    OMP_NUM_THREADS=1 python scripts/profile_pretrain.py --config synthetic --config minkunet34-seem-nkw --steps 5

A paper (zoo) config runs as the config-matrix tests run it (``tests/training/test_config_matrix.py``): the
official-layout samples of its datasets (:func:`largead.data.export.write_official_samples`) and superpixel maps in
each official generator's layout (:func:`largead.superpixels.export.write_superpixel_samples`) are written to a
temporary folder, and the config's data roots, superpixel roots, ``train.batch_size`` (``--batch-size``, default 1)
and ``teacher.random_init=true`` (a random-init teacher of the config's architecture: no download) are overridden;
nothing else changes. ``--mixed-precision bf16`` profiles under bf16 autocast. Prints one Markdown table per config.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", required=True, help="a config name or path (repeatable)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after 1 warm-up (default 5)")
    parser.add_argument("--batch-size", type=int, default=1, help="train.batch_size of the zoo configs (default 1)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    parser.add_argument("--mixed-precision", choices=("no", "bf16"), default="no")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from largead.training import pretrain
    from largead.zoo import REGISTRY

    with tempfile.TemporaryDirectory(prefix="largead-profile-data-") as tmp:
        os.environ.setdefault("LARGEAD_CACHE", str(Path(tmp) / "cache"))  # the synthetic teacher, if not cached
        roots = superpixels = None
        for name in args.config:
            overrides = [f"train.mixed_precision={args.mixed_precision}"]
            if f"largead/{Path(name).stem}" in REGISTRY:  # a paper config: the official-layout samples
                if roots is None:
                    roots, superpixels = _official(Path(tmp))
                cfg = pretrain.load_pretrain_config(name)
                for i, d in enumerate(cfg.data):
                    overrides += [f"data.{i}.root={roots[d.name]}", f"data.{i}.superpixels.root={superpixels[d.name]}"]
                overrides += [f"train.batch_size={args.batch_size}", "teacher.random_init=true"]
            cfg = pretrain.load_pretrain_config(name, overrides)
            pretrain.profile(cfg, args.steps, name, clock=args.clock)
            print(flush=True)
    return 0


def _official(tmp: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """``({dataset: root}, {dataset: superpixel root})`` of the official-layout samples written under ``tmp``."""
    from largead.data.export import write_official_samples
    from largead.superpixels.export import write_superpixel_samples

    samples = write_official_samples(tmp / "official")
    maps = write_superpixel_samples(samples, tmp / "superpixels")
    return {k: s.root for k, s in samples.items()}, maps


if __name__ == "__main__":
    sys.exit(main())
