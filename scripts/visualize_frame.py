#!/usr/bin/env python
"""Render one frame of a dataset to a PNG: BEV coloured by label, every camera with projected points by depth.

    python scripts/visualize_frame.py --dataset synthetic --index 0 --out frame.png
    python scripts/visualize_frame.py --dataset nuscenes --root /data/nuscenes --version v1.0-mini \
        --split mini_val --index 10 --out nusc.png
    python scripts/visualize_frame.py --dataset semantickitti --root /data/kitti --split val --cameras --out k.png
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

from largead.data import get_dataset  # noqa: E402
from largead.viz import render_frame, save_figure  # noqa: E402


@dataclass
class Args:
    dataset: str
    root: str | None
    split: str
    index: int
    out: str
    version: str | None
    cameras: bool
    extent: float
    dpi: int


def parse_args(argv: list[str] | None = None) -> Args:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, help="registered dataset name (see largead.data.list_datasets())")
    p.add_argument("--root", default=None, help="dataset root (not needed for synthetic)")
    p.add_argument("--split", default=None, help="split (default: the dataset's first split)")
    p.add_argument("--index", type=int, default=0, help="frame index within the split")
    p.add_argument("--out", default="frame.png", help="output image (PNG)")
    p.add_argument("--version", default=None, help="nuScenes table version, e.g. v1.0-mini")
    p.add_argument("--cameras", action="store_true", help="ask readers with optional cameras to load them")
    p.add_argument("--extent", type=float, default=50.0, help="half-width of the BEV, metres")
    p.add_argument("--dpi", type=int, default=110)
    a = p.parse_args(argv)
    return Args(a.dataset, a.root, a.split, a.index, a.out, a.version, a.cameras, a.extent, a.dpi)


def main(argv: list[str] | None = None) -> None:
    from largead.data.registry import dataset_class

    args = parse_args(argv)
    cls = dataset_class(args.dataset)
    split = args.split or cls.splits[0]
    options: dict = {}
    if args.version:
        options["version"] = args.version
    if args.cameras:
        options["cameras"] = True
    ds = get_dataset(args.dataset, args.root, split, **options)
    frame = ds[args.index]
    fig = render_frame(frame, class_names=ds.class_names, extent=args.extent)
    path = save_figure(fig, args.out, dpi=args.dpi)
    print(f"wrote {path} ({args.dataset} {split} #{args.index}: {frame.num_points} points, "
          f"{len(frame.cameras)} cameras)")


if __name__ == "__main__":
    main()
