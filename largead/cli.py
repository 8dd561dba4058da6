"""The ``largead`` command line.

    largead list [--filter GLOB]                  zoo entries
    largead info NAME                             one entry: recipe, voxelisation, reported numbers
    largead datasets                              registered dataset readers
    largead embed SCAN --model NAME --out F.npy   per-point features of one scan (.bin, .pcd.bin, .npy, .npz)
    largead embed DIR|GLOB... --model NAME --out DIR      many scans, or --dataset NAME --root R --split S: resumable
    largead convert OFFICIAL.pt OUT_DIR           SLidR/Seal checkpoint -> Hub-ready folder
    largead view [SCAN] [--dataset NAME ...]      interactive 3D view of a scan as one self-contained HTML file
    largead demo                                  the main job on the synthetic world

Errors print one line (``largead: error: ...``) and exit with status 2 (usage) or 1 (everything else).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path


class CLIError(Exception):
    """An error to print as one line and exit with status 1."""


def _cmd_list(args: argparse.Namespace) -> int:
    from largead.zoo import list_models, model_info

    names = list_models(args.filter)
    if not names:
        raise CLIError(f"no model matches {args.filter!r}")
    for name in names:
        info = model_info(name)
        mark = "published" if info.published else "recipe"
        print(f"{name:45s} {mark:9s} {info.description}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from largead.zoo import model_info

    try:
        info = model_info(args.name)
    except KeyError as err:
        raise CLIError(str(err)) from None
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    print(info.name)
    print(f"  {info.description}")
    for key in ("source", "data", "teacher", "config_file", "published"):
        print(f"  {key:13s} {getattr(info, key)}")
    arch = info.config
    for key in ("backbone", "feature_mode", "in_channels", "out_channels", "voxel_size", "cylindrical"):
        print(f"  {key:13s} {getattr(arch, key)}")
    if info.aliases:
        print(f"  {'aliases':13s} {', '.join(info.aliases)}")
    if info.paper_results:
        print("  reported by the paper (mIoU %):")
        for r in info.paper_results:
            frac = "" if r.protocol == "linear_probe" else f" {r.fraction:g}%"
            print(f"    {r.dataset:14s} {r.protocol}{frac:5s} {r.miou:6.2f}   [{r.source}]")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from largead.data import dataset_class, list_datasets

    for name in list_datasets():
        cls = dataset_class(name)
        flags = ", ".join(f for f, on in (("cameras", cls.has_cameras), ("temporal", cls.temporal)) if on)
        print(f"{name:16s} {len(cls.class_names):3d} classes  splits: {', '.join(cls.splits):30s} {flags}")
    return 0


def read_scan(path: str | Path, columns: int | None = None):
    """Load a scan as an (N, 4) float32 array (:func:`largead.extract.read_scan`): ``.bin`` (KITTI-style float32 x 4,
    or ``columns``), ``.pcd.bin`` (nuScenes, float32 x 5), ``.npy`` (N, >= 4) or ``.npz`` (key ``points``). Errors
    (missing, malformed, ambiguous width, empty, non-finite) become one-line :class:`CLIError`."""
    from largead.extract import read_scan as _read

    try:
        return _read(path, columns)
    except (ValueError, OSError) as err:
        raise CLIError(str(err)) from None


def _check_device(name: str):
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise CLIError(f"--device {name}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        why = ("this torch build has no CUDA support" if torch.version.cuda is None
               else "no CUDA device is visible (CUDA_VISIBLE_DEVICES, driver)")
        raise CLIError(f"--device {name}: {why} (torch {torch.__version__}); use --device cpu")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CLIError(f"--device {name}: MPS is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise CLIError(f"--device {name}: unsupported device type {device.type!r}; use cpu or cuda")
    return device


def _key_values(items: Sequence[str] | None, what: str) -> dict:
    """``KEY=VALUE`` arguments as a dict, through the project's one parser (values as YAML:
    :func:`largead.config.parse_overrides`); a malformed one is a one-line error naming ``what``."""
    from largead.config import ConfigError, parse_overrides

    try:
        return parse_overrides(items or [], what)
    except ConfigError as err:
        raise CLIError(str(err)) from None


def _cmd_embed(args: argparse.Namespace) -> int:
    import os

    # bfloat16 products: oneDNN compiles a kernel per product shape and keeps 1024; scans of varied sizes keep asking
    # for new bucketed shapes (~770 after 40 nuScenes-like scans), so a long extraction keeps more (read lazily, at
    # the first product; set the variable yourself to override)
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "4096")
    import numpy as np

    from largead import LargeADEncoder
    from largead.extract import ExtractionError, dataset_source, embed_points, extract_features, file_source
    from largead.fileio import atomic_path
    from largead.sparse.inference import resolve_precision

    device = _check_device(args.device)
    dataset_mode = not args.scans
    if dataset_mode and not (args.dataset and args.split):
        raise CLIError("give scan files, folders or globs, or --dataset NAME [--root DIR] --split SPLIT")
    if not dataset_mode and (args.root or args.split or args.option or args.limit is not None):
        raise CLIError("--root, --split, --option and --limit select dataset frames; they do not apply to scan files")
    out = Path(args.out)
    single = (not dataset_mode and len(args.scans) == 1 and Path(args.scans[0]).is_file() and args.format == "npy"
              and not out.is_dir())
    if args.png and not single:
        raise CLIError("--png needs exactly one scan and a file --out")
    if not single and out.exists() and not out.is_dir():
        raise CLIError(f"--out {out}: exists and is not a folder (several scans need an output folder)")
    # inputs first (cheap, and a bad input must not wait for the model)
    try:
        if dataset_mode:
            options = _key_values(args.option, "--option")
            source = dataset_source(args.dataset, args.root, args.split, options, args.limit)
        else:
            source = file_source(args.scans, args.columns)
    except (ValueError, KeyError, OSError) as err:
        raise CLIError(str(err).strip("'\"")) from None
    points = read_scan(source.paths[0], args.columns) if single else None
    try:
        encoder = LargeADEncoder.from_pretrained(args.model, local_files_only=args.offline)
    except (OSError, KeyError, ValueError) as err:
        raise CLIError(f"cannot load model {args.model!r}: {err}") from None
    encoder = encoder.to(device).eval()
    norm = None if args.norm == "none" else (args.norm or args.dataset)
    known = encoder.config.input_norm
    if not dataset_mode and args.dataset and args.norm is None and args.dataset not in known:
        from largead.data import list_datasets

        if args.dataset not in list_datasets():
            raise CLIError(f"unknown dataset {args.dataset!r}; known: {', '.join(list_datasets())}"
                           + (f"; this model's normalisation keys: {', '.join(sorted(known))}" if known else ""))
    if norm is not None and known and norm not in known:
        raise CLIError(f"model {args.model!r} has input normalisation for {sorted(known)} but not for {norm!r}; "
                       "pass --norm KEY (one of those) or --norm none for raw intensity")
    if single:
        try:
            (feats,), (dropped,) = embed_points(encoder, [points], dataset=norm, precision=args.precision,
                                                max_range=args.max_range)
        except (ValueError, KeyError) as err:
            raise CLIError(f"{args.scans[0]}: {str(err).strip(chr(39))}") from None
        with atomic_path(out) as tmp, open(tmp, "wb") as f:
            np.save(f, feats)
        dtype = str(resolve_precision(args.precision, device)).replace("torch.", "")
        print(f"wrote {out} ({feats.shape[0]} points x {feats.shape[1]} features, precision {args.precision} -> "
              f"{dtype})")
        if dropped:
            print(f"dropped {dropped} points farther than {args.max_range} m (their rows are NaN)")
        if args.png:
            from largead.viz import save_feature_bev

            ok = np.isfinite(feats).all(axis=1)
            png = save_feature_bev(points[ok], feats[ok], args.png,
                                   title=f"{Path(args.scans[0]).name} - {args.model}")
            print(f"wrote {png}")
        return 0
    try:
        stats = extract_features(encoder, source, out, dataset=norm, precision=args.precision,
                                 batch_size=args.batch_size, workers=args.workers, fmt=args.format,
                                 shard_size=args.shard_size, overwrite=args.overwrite, max_range=args.max_range,
                                 progress=not args.no_progress)
    except (ExtractionError, ValueError, KeyError) as err:
        raise CLIError(str(err).strip("'\"")) from None
    print(stats.summary())
    print(f"features in {out}{' (parquet shards)' if args.format == 'parquet' else ''}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from largead import load_official_checkpoint
    from largead.cards import render_card
    from largead.fileio import atomic_directory

    src = Path(args.checkpoint)
    if not src.is_file():
        raise CLIError(f"{src}: no such file")
    out = Path(args.out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise CLIError(f"{out} exists and is not an empty folder; pass --overwrite to replace it")
    try:
        encoder = load_official_checkpoint(src)
    except (KeyError, ValueError, RuntimeError) as err:
        raise CLIError(str(err) if str(src) in str(err) else f"{src}: {err}") from None
    datasets = [d.strip() for d in args.data.split(",") if d.strip()]
    encoder.card_text = str(render_card(None, config=encoder.config.to_dict(), datasets=datasets,
                                        provenance=f"Converted from the official checkpoint `{src.name}` with "
                                                   f"`largead convert` (pretraining data: {', '.join(datasets)})."))
    with atomic_directory(out) as tmp:  # the folder appears complete or not at all
        encoder.save_pretrained(tmp)
    print(f"wrote {out} (config.json, model.safetensors, README.md)")
    return 0


def _cmd_view(args: argparse.Namespace) -> int:
    import webbrowser

    from largead.viewer import view
    from largead.viewer.serve import serve

    if (args.scan is None) == (args.dataset is None):
        raise CLIError("give a scan file, or --dataset NAME (with --root, --split, --index), but not both")
    if args.frames < 1:
        raise CLIError(f"--frames must be >= 1, got {args.frames}")
    if args.scan is not None and not Path(args.scan).is_file():
        raise CLIError(f"{args.scan}: no such file")
    features = None
    if args.features is not None:
        import numpy as np

        if args.model is not None:
            raise CLIError("give --model or --features, not both")
        if not Path(args.features).is_file():
            raise CLIError(f"{args.features}: no such file")
        features = np.load(args.features, allow_pickle=False)
    out = view(
        args.scan, args.out, dataset=args.dataset, root=args.root, split=args.split, index=args.index,
        frames=args.frames, dataset_options=_key_values(args.option, "--option"), model=args.model,
        features=features, input_norm_key=args.norm_key, superpixels=args.superpixels,
        superpixel_options=_key_values(args.superpixel_option, "--superpixel-option"), segments=args.segments,
        cameras=not args.no_cameras, query=args.query, title=args.title, device=args.device, offline=args.offline,
        max_image_width=args.max_image_width or None, image_format=args.image_format,
        feature_dtype=args.feature_dtype)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)", flush=True)
    if args.serve:
        serve(out, port=args.port, open_browser=args.open)
    elif args.open:
        webbrowser.open(out.resolve().as_uri())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from largead.demo import run_demo

    run_demo(output_dir=Path(args.output_dir), quick=args.quick)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from largead import __version__

    parser = argparse.ArgumentParser(prog="largead", description="LargeAD LiDAR encoders: zoo, embedding, conversion.")
    parser.add_argument("--version", action="version", version=f"largead {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", help="list zoo entries", description="List the zoo's named variants.")
    p.add_argument("--filter", default=None, help="glob on the name, e.g. '*seem*'")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="show one zoo entry", description="Show what a zoo name means.")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("datasets", help="list dataset readers", description="List registered dataset readers.")
    p.set_defaults(func=_cmd_datasets)

    p = sub.add_parser("embed", help="per-point features of scans or a dataset split",
                       description="Run an encoder on scans (files, folders, globs) or a dataset split and save "
                                   "(N, D) per-point features: one scan -> the --out file; several -> one .npy per "
                                   "scan (or parquet shards) in the --out folder, resumable.")
    p.add_argument("scans", nargs="*", help=".bin (x,y,z,i float32), .pcd.bin (nuScenes), .npy, .npz; folders; globs")
    p.add_argument("--model", required=True, help="zoo name, org/name[@revision] or a local folder")
    p.add_argument("--out", required=True, help="output file (one scan) or folder (several scans, a dataset)")
    p.add_argument("--dataset", default=None,
                   help="with scans: the input normalisation to apply; alone: the dataset reader to embed "
                        "(with --root/--split)")
    p.add_argument("--root", default=None, help="dataset root folder (dataset mode)")
    p.add_argument("--split", default=None, help="dataset split (dataset mode)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="dataset reader option (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="embed only the first N frames (dataset mode)")
    p.add_argument("--norm", default=None,
                   help="input normalisation key (default: --dataset when the model has statistics for it; 'none')")
    p.add_argument("--columns", type=int, default=None,
                   help="float32 values per point in .bin files (default 4; .pcd.bin 5)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bfloat16 where the CPU/GPU has it natively, float32 elsewhere (output is float32)")
    p.add_argument("--batch-size", type=int, default=1, help="scans per forward pass (default 1)")
    p.add_argument("--workers", type=int, default=1, help="reader processes overlapping with compute (0: none)")
    p.add_argument("--format", choices=["npy", "parquet"], default="npy",
                   help="npy: one file per scan; parquet: shards that datasets.load_dataset('parquet') opens")
    p.add_argument("--shard-size", type=int, default=256, help="scans per parquet shard (default 256)")
    p.add_argument("--overwrite", action="store_true", help="recompute outputs that already exist")
    p.add_argument("--max-range", type=float, default=None,
                   help="drop points farther than this many metres (their feature rows are NaN)")
    p.add_argument("--png", default=None, help="also write a PCA-coloured bird's-eye view here (one scan)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--offline", action="store_true", help="never contact the Hub (HF_HUB_OFFLINE=1 does the same)")
    p.set_defaults(func=_cmd_embed)

    p = sub.add_parser("convert", help="official .pt -> Hub folder",
                       description="Convert a SLidR/Seal-style checkpoint into a Hub-ready folder.")
    p.add_argument("checkpoint")
    p.add_argument("out_dir")
    p.add_argument("--data", default="nuscenes",
                   help="comma list of the datasets the checkpoint was pretrained on, for its card and licence "
                        "(default nuscenes: SLidR and Seal release nuScenes-pretrained encoders)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("view", help="interactive 3D view of a scan (one HTML file)",
                       description="Write one self-contained HTML page (no server, no network needed) showing a "
                                   "scan or a dataset frame in 3D: colours by height, intensity, class, superpoints, "
                                   "predictions, features (PCA), and the similarity of every point's feature to a "
                                   "clicked point; camera images with the projected points; a frame slider.")
    p.add_argument("scan", nargs="?", default=None,
                   help=".bin (KITTI; inside a SemanticKITTI sequences/<seq>/velodyne/ folder it brings labels, pose "
                        "and image_2), .pcd.bin (nuScenes) or .npy; or leave out and give --dataset")
    p.add_argument("--dataset", default=None, help="dataset reader name (largead datasets)")
    p.add_argument("--root", default=None, help="dataset root folder")
    p.add_argument("--split", default="val")
    p.add_argument("--index", type=int, default=0, help="frame index within the split")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset reader option (repeatable; YAML values), e.g. num_sequences=1")
    p.add_argument("--frames", type=int, default=1, help="show N consecutive frames in the global frame, with a slider")
    p.add_argument("--model", default=None,
                   help="zoo name, org/name, encoder folder (features) or fine-tuned model folder (predictions)")
    p.add_argument("--features", default=None, metavar="F.npy",
                   help="per-point features computed elsewhere (largead embed --out F.npy) instead of --model")
    p.add_argument("--norm-key", default=None, help="which of the model's per-dataset input normalisations to apply")
    p.add_argument("--superpixels", default=None, metavar="SOURCE",
                   help="superpixel source for the superpoints mode (slic, synthetic-vfm, seem, ...)")
    p.add_argument("--superpixel-option", action="append", default=[], metavar="KEY=VALUE",
                   help="superpixel source option (repeatable), e.g. root=superpixels/nuscenes")
    p.add_argument("--segments", action=argparse.BooleanOptionalAction, default=None,
                   help="RANSAC ground + HDBSCAN segments as a colour mode (default: with --frames >= 2)")
    p.add_argument("--no-cameras", action="store_true", help="leave the camera images out")
    p.add_argument("--query", type=int, default=None, help="point clicked when the page opens")
    p.add_argument("--title", default=None)
    p.add_argument("--max-image-width", type=int, default=480, help="shrink camera images to this width (0: keep)")
    p.add_argument("--image-format", choices=("jpeg", "png"), default="jpeg")
    p.add_argument("--feature-dtype", choices=("int8", "float16", "float32"), default="int8",
                   help="how the features are stored in the page")
    p.add_argument("--device", default="cpu")
    p.add_argument("--offline", action="store_true", help="never contact the Hub (HF_HUB_OFFLINE=1 does the same)")
    p.add_argument("--out", default="view.html", help="output HTML file")
    p.add_argument("--serve", action="store_true", help="serve the page on http://127.0.0.1 and print the URL")
    p.add_argument("--port", type=int, default=0, help="port for --serve (0: a free one)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.set_defaults(func=_cmd_view)

    p = sub.add_parser("demo", help="the main job on the synthetic world",
                       description="Superpixels -> pretraining -> linear probe -> pictures, on the synthetic world.")
    p.add_argument("--output-dir", default="outputs/demo")
    p.add_argument("--quick", action="store_true", help="a tiny run (seconds) to check the set-up")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from largead.errors import debug_enabled, normalize_flags, one_line

    parser = build_parser()
    args = parser.parse_args(normalize_flags(parser, argv))
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `largead list | head`: the reader left; nothing is wrong
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except CLIError as err:
        print(f"largead: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("largead: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - every error is one line (LARGEAD_DEBUG=1: the traceback)
        if debug_enabled():
            raise
        print(f"largead: error: {one_line(err)} (set LARGEAD_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
