"""Generate superpixels for every camera image of a registered dataset, in Seal's on-disk layout.

    python scripts/generate_superpixels.py --source slic --dataset synthetic --out superpixels/synthetic
    python scripts/generate_superpixels.py --source synthetic-vfm --option granularity=sam --dataset synthetic \\
        --out superpixels/synthetic --dataset-option num_sequences=2
    python scripts/generate_superpixels.py --source sam --option model=/models/sam-vit-huge \\
        --dataset nuscenes --root /data/nuscenes --out superpixels/nuscenes --split train

writes ``OUT/superpixels_<tag>/<camera token>.png`` (``<tag>`` is the source name, or ``synthetic-vfm-<granularity>``)
and ``OUT/superpixels_<tag>/_manifest.json`` (source, parameters, dataset, counts, images without superpixels).
Existing files are kept unless ``--overwrite``; every file is written atomically, so an interrupted run resumes.
An image whose map has a single id (nothing segmented) is written, reported on stderr and listed under
``"degenerate"`` in the manifest. ``--option``/``--dataset-option`` values are parsed as JSON when they can be
(``points_per_side=16``, ``image_size=[48,80]``), else kept as strings.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from largead.fileio import atomic_write_text


def _parse_options(items: list[str], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: {what} {item!r} must look like key=value")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="superpixel source (largead.superpixels.list_sources())")
    parser.add_argument("--dataset", required=True, help="registered dataset name (largead.data.list_datasets())")
    parser.add_argument("--out", required=True, type=Path, help="output root; maps go to OUT/superpixels_<tag>/")
    parser.add_argument("--root", default=None, help="dataset root folder (ignored by the synthetic world)")
    parser.add_argument("--split", default="train", help="dataset split (default: train)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N frames")
    parser.add_argument("--overwrite", action="store_true", help="recompute maps that already exist")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="option of the superpixel source (repeatable), e.g. granularity=sam, model=/path")
    parser.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                        help="option of the dataset (repeatable), e.g. num_sequences=2")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tqdm.auto import tqdm

    from largead.data import get_dataset
    from largead.superpixels import get_source, save_superpixels, superpixel_path

    source_opts = _parse_options(args.option, "--option")
    dataset_opts = _parse_options(args.dataset_option, "--dataset-option")
    if args.limit is not None and args.limit < 1:
        print(f"error: --limit must be >= 1, got {args.limit}", file=sys.stderr)
        return 2
    try:
        source = get_source(args.source, **source_opts)
        dataset = get_dataset(args.dataset, args.root, args.split, **dataset_opts)
    except (KeyError, ValueError, TypeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not getattr(dataset, "has_cameras", False):
        print(f"error: dataset {args.dataset!r} has no cameras to segment", file=sys.stderr)
        return 2

    folder = args.out / f"superpixels_{source.tag}"
    folder.mkdir(parents=True, exist_ok=True)
    num_frames = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    written, skipped, degenerate, segment_counts = 0, 0, [], []
    for i in tqdm(range(num_frames), desc=f"superpixels_{source.tag}", unit="frame"):
        frame = dataset[i]
        todo = []
        for cam in frame.cameras:
            if not cam.token:
                print(f"error: frame {i} ({frame.token or '?'}) camera {cam.name or '?'} has no token to name its "
                      "superpixel file", file=sys.stderr)
                return 1
            path = superpixel_path(args.out, source.tag, cam.token)
            if path.exists() and not args.overwrite:
                skipped += 1
            else:
                todo.append((cam, path))
        if not todo:
            continue
        maps = source.segment_batch([c.image for c, _ in todo], [c for c, _ in todo])
        for (cam, path), ids in zip(todo, maps):
            n = int(np.unique(ids).size)
            segment_counts.append(n)
            if n <= 1:
                degenerate.append(cam.token)
                tqdm.write(f"warning: no superpixels in {cam.token} (frame {i}, camera {cam.name}): the whole image "
                           f"is one id ({int(ids.flat[0])})", file=sys.stderr)
            save_superpixels(path, ids)
            written += 1

    counts = np.asarray(segment_counts)
    manifest = {
        "source": source.name,
        "tag": source.tag,
        "params": source.params(),
        "dataset": args.dataset,
        "root": args.root,
        "split": args.split,
        "dataset_options": dataset_opts,
        "frames": num_frames,
        "images": written + skipped,
        "written": written,
        "skipped_existing": skipped,
        "degenerate": degenerate,
        "segments_per_image": ({"mean": float(counts.mean()), "min": int(counts.min()), "max": int(counts.max())}
                               if counts.size else None),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    _write_json_atomic(folder / "_manifest.json", manifest)
    print(f"{folder}: {written} written, {skipped} already there, {len(degenerate)} without superpixels"
          + (f", {counts.mean():.1f} segments per image" if counts.size else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
