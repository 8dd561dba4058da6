"""Generate superpixels for every camera image of a registered dataset, in Seal's on-disk layout.

``scripts/generate_superpixels.py`` is the launcher of this module (so is ``python -m
largead.superpixels.generate``); :func:`main` takes the same arguments in-process.

    python scripts/generate_superpixels.py --source slic --dataset synthetic --out superpixels/synthetic
    python scripts/generate_superpixels.py --source synthetic-vfm --option granularity=sam --dataset synthetic \\
        --out superpixels/synthetic --dataset-option num_sequences=2
    python scripts/generate_superpixels.py --source slic --dataset semantickitti --root /data/semantickitti \\
        --dataset-option cameras=true --out superpixels/semantickitti
    python scripts/generate_superpixels.py --source sam --option model=/models/sam-vit-huge \\
        --dataset nuscenes --root /data/nuscenes --out superpixels/nuscenes --split train

writes ``OUT/superpixels_<tag>/<camera token>.png`` (``<tag>`` is the source name, or ``synthetic-vfm-<granularity>``)
and ``OUT/superpixels_<tag>/_manifest.json`` (source, parameters, dataset, counts, images without superpixels, maps
regenerated because they were damaged). ``--option``/``--dataset-option`` values are parsed as YAML, like every
``key=value`` of the project (:func:`largead.config.parse_overrides`: ``points_per_side=16``, ``image_size=[48,80]``,
``cameras=true``, ``model=/models/sam``).

The dataset is opened with exactly the options given, and its frames' cameras are what gets segmented: a reader
whose cameras are off by default (SemanticKITTI) needs ``--dataset-option cameras=true``. Errors are one line
(``LARGEAD_DEBUG=1`` for a traceback): exit 2 when the dataset, opened with these options, has no cameras (or an
argument is wrong), exit 1 naming the frame (and camera) when a frame has no camera image or a camera image gets no
map of its size. A frame's maps are checked before any of them is written, and the manifest is written last.

Resuming: every map is written atomically and durably, so an interrupted run resumes where it stopped. Existing maps
are kept unless ``--overwrite``, but only after a check: by default a cheap one (PNG signature, width and height
equal to the camera image's, the closing IEND chunk present: catches truncated, emptied and zeroed files); with
``--verify`` every kept map is decoded with all chunk CRCs checked (also catches flipped bytes). A map that fails is
reported on stderr and regenerated. An image whose map has a single id (nothing segmented) is written, reported on
stderr and listed under ``"degenerate"`` in the manifest. Temporaries left by killed runs are removed at start.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from largead.fileio import atomic_write_text, clean_stale_temporaries

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # length 0, type, CRC: the last 12 bytes of every complete PNG


class GenerationError(Exception):
    """A failure reported as one line, exit status 1."""


def _parse_options(items: list[str], what: str) -> dict[str, Any]:
    """``key=value`` options, parsed by the project's one parser (argument errors exit with status 2)."""
    from largead.config import ConfigError, parse_overrides

    try:
        return parse_overrides(items, what)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n", durable=True)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="generate_superpixels.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="superpixel source (largead.superpixels.list_sources())")
    parser.add_argument("--dataset", required=True, help="registered dataset name (largead.data.list_datasets())")
    parser.add_argument("--out", required=True, type=Path, help="output root; maps go to OUT/superpixels_<tag>/")
    parser.add_argument("--root", default=None, help="dataset root folder (ignored by the synthetic world)")
    parser.add_argument("--split", default="train", help="dataset split (default: train)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N frames")
    parser.add_argument("--overwrite", action="store_true", help="recompute maps that already exist")
    parser.add_argument("--verify", action="store_true",
                        help="decode every existing map with CRC checks before keeping it (default: a cheap check of "
                             "size and completeness); damaged maps are regenerated either way")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="option of the superpixel source (repeatable), e.g. granularity=sam, model=/path")
    parser.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                        help="option of the dataset (repeatable), e.g. num_sequences=2, cameras=true")
    return parser.parse_args(argv)


def check_existing_map(path: Path, hw: tuple[int, int], verify: bool) -> str | None:
    """``None`` if the map at ``path`` can be kept for an image of ``hw`` = (height, width), else why not.

    Cheap (default): the PNG signature, IHDR's width and height, and the closing IEND chunk (two small reads). With
    ``verify``: the whole file is decoded with every chunk's CRC checked (:func:`largead.superpixels.load_superpixels`).
    """
    from largead.superpixels import load_superpixels

    if verify:
        try:
            load_superpixels(path, expected_hw=hw)
        except (ValueError, FileNotFoundError) as err:
            return _one_line(err).removeprefix(f"{path}: ")
        return None
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(24)
            if size >= 12:
                fh.seek(size - 12)
            tail = fh.read(12)
    except OSError as err:
        return f"unreadable ({_one_line(err)})"
    if size < 57 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return f"not a complete PNG ({size} bytes)"
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if (height, width) != tuple(int(v) for v in hw):
        return f"map is {height}x{width} (HxW) but its image is {int(hw[0])}x{int(hw[1])}"
    if tail != PNG_IEND:
        return "truncated (no IEND chunk at the end)"
    return None


def _camera_problem(dataset: Any, name: str) -> str | None:
    if not getattr(type(dataset), "has_cameras", False):
        return f"dataset {name!r} has no cameras to segment"
    if getattr(dataset, "load_cameras", None) is False:
        return (f"dataset {name!r} was opened with its cameras off (the reader's cameras option); pass "
                "--dataset-option cameras=true")
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("error: interrupted (the maps written so far are complete; run again to resume)", file=sys.stderr)
        return 130
    except Exception as err:
        if os.environ.get("LARGEAD_DEBUG", "") not in ("", "0"):
            raise
        prefix = "" if isinstance(err, GenerationError) else f"{type(err).__name__}: "
        print(f"error: {prefix}{_one_line(err)} (set LARGEAD_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
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
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    problem = _camera_problem(dataset, args.dataset)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    folder = args.out / f"superpixels_{source.tag}"
    folder.mkdir(parents=True, exist_ok=True)
    for path in clean_stale_temporaries(folder, recursive=True):
        tqdm.write(f"removed {path}, left behind by a killed run", file=sys.stderr)
    num_frames = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    written, skipped, degenerate, damaged, segment_counts = 0, 0, [], [], []
    for i in tqdm(range(num_frames), desc=f"superpixels_{source.tag}", unit="frame"):
        frame = dataset[i]
        where = f"frame {i} ({frame.token or '?'})"
        if not frame.cameras:
            raise GenerationError(f"{where} of dataset {args.dataset!r} has no camera image to segment (options "
                                  f"{dataset_opts}); superpixels need every frame's cameras")
        todo = []
        for cam in frame.cameras:
            if not cam.token:
                raise GenerationError(f"{where} camera {cam.name or '?'} has no token to name its superpixel file")
            path = superpixel_path(args.out, source.tag, cam.token)
            if path.exists() and not args.overwrite:
                reason = check_existing_map(path, cam.image.shape[:2], args.verify)
                if reason is None:
                    skipped += 1
                    continue
                tqdm.write(f"warning: {path}: {reason}; regenerating it ({where}, camera {cam.name})",
                           file=sys.stderr)
                damaged.append(cam.token)
            todo.append((cam, path))
        if not todo:
            continue
        maps = list(source.segment_batch([c.image for c, _ in todo], [c for c, _ in todo]))
        checked = []
        for k, (cam, path) in enumerate(todo):  # every image must get a map of its size before anything is written
            ids = maps[k] if k < len(maps) else None
            if ids is None:
                raise GenerationError(f"{where} camera {cam.name} ({cam.token}): source {source.tag!r} returned no "
                                      "superpixel map for this image")
            ids = np.asarray(ids)
            if ids.shape != cam.image.shape[:2]:
                raise GenerationError(f"{where} camera {cam.name} ({cam.token}): source {source.tag!r} returned a "
                                      f"map of shape {ids.shape} for an image of {cam.image.shape[:2]}")
            checked.append((cam, path, ids))
        for cam, path, ids in checked:
            n = int(np.unique(ids).size)
            segment_counts.append(n)
            if n <= 1:
                degenerate.append(cam.token)
                tqdm.write(f"warning: no superpixels in {cam.token} ({where}, camera {cam.name}): the whole image "
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
        "existing_check": "full (CRC)" if args.verify else "cheap (size, IEND)",
        "regenerated_damaged": damaged,
        "degenerate": degenerate,
        "segments_per_image": ({"mean": float(counts.mean()), "min": int(counts.min()), "max": int(counts.max())}
                               if counts.size else None),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    _write_json_atomic(folder / "_manifest.json", manifest)
    print(f"{folder}: {written} written ({len(damaged)} of them replaced damaged maps), {skipped} already there, "
          f"{len(degenerate)} without superpixels"
          + (f", {counts.mean():.1f} segments per image" if counts.size else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
