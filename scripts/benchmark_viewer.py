"""Size and interactivity of ``largead view`` pages (the numbers in docs/viewer.md).

    python scripts/benchmark_viewer.py [--model ENCODER] [--json results.json]

1. **Size** of a page for one 30k-point frame of the synthetic world (nuScenes-like: 32 beams, six 1600 x 900
   cameras) with 64-d features, for each ``feature_dtype`` and a few ``max_image_width`` values, with and without
   the superpoints mode (which adds one overlay image per camera). Features are computed once (``--model``, default
   a randomly initialised MinkUNet-34 with 64 outputs) and given to each variant.
2. **Interactivity** in headless Chromium (SwiftShader: WebGL rendered on the CPU; no GPU involved) for a ~100k-point
   frame (64 beams, 0.2 degree columns) and the 30k-point one: time until the page is ready, render time per frame
   while orbiting (until the GPU is done: a one-pixel ``readPixels``) and the interval between animation frames
   (medians of three runs of 60 frames), time to switch each colour mode (recolour + upload + render + redraw the
   camera images; the first switch to a mode decodes its images), to compute the similarities after a click, and to
   pick the point under the cursor.

Everything runs on this machine's CPU; on a shared machine run it when it is quiet, and expect a GPU browser to
render far faster (the SwiftShader numbers are an upper bound for rendering; the JavaScript work is the same).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from largead.viewer import (
    ViewOptions,
    build_view,
    prepare,
    write_view,
)


def synthetic_frame(beams: int, azimuth: float, image_size: tuple[int, int]):
    from largead.data import get_dataset

    ds = get_dataset("synthetic", split="val", num_sequences=1, frames_per_sequence=1, beams=beams,
                     azimuth_resolution=azimuth, image_size=image_size)
    return ds, ds[0]


def load_model(name: str | None) -> prepare.LoadedModel:
    if name:
        return prepare.load_model(name)
    import torch

    from largead import LargeADConfig, LargeADEncoder

    torch.manual_seed(0)
    return prepare.LoadedModel(name="random MinkUNet-34 (64-d)", encoder=LargeADEncoder(LargeADConfig()).eval())


def features_of(model: prepare.LoadedModel, frame) -> np.ndarray:
    key = "synthetic" if "synthetic" in model.encoder.config.input_norm else None
    return prepare.run_model(model, [frame], key)[0][0]


def sizes(model: prepare.LoadedModel, out_dir: Path) -> dict:
    t0 = time.perf_counter()
    ds, frame = synthetic_frame(32, 1.0 / 3.0, (900, 1600))
    source = prepare.source_from_dataset(ds, 0)
    feats = features_of(model, frame)
    print(f"30k frame: {frame.num_points} points, {len(frame.cameras)} cameras {frame.cameras[0].image.shape}, "
          f"features {feats.shape} ({time.perf_counter() - t0:.0f} s)")
    rows = []
    variants = [("int8", 480, None), ("float16", 480, None), ("float32", 480, None), ("int8", 960, None),
                ("int8", 240, None), ("int8", 480, "synthetic-vfm")]
    for dtype, width, sp in variants:
        data = build_view(source, features=feats, superpixels=sp, segments=False,
                          options=ViewOptions(feature_dtype=dtype, max_image_width=width))
        path = write_view(data, out_dir / f"size-{dtype}-{width}-{sp or 'none'}.html")
        row = {"feature_dtype": dtype, "max_image_width": width, "superpixels": sp, "points": frame.num_points,
               "file_mb": round(path.stat().st_size / 1e6, 2),
               "features_mb": round(data.array_bytes()["features"] * 4 / 3 / 1e6, 2),
               "images_mb": round(data.image_bytes() / 1e6, 2)}
        rows.append(row)
        print("  " + json.dumps(row))
    return {"frame_points": frame.num_points, "cameras": len(frame.cameras), "variants": rows}


def interactivity(model: prepare.LoadedModel, out_dir: Path) -> list[dict]:
    from largead.viewer.browser import Browser

    results = []
    for label, beams, azimuth in (("100k", 64, 0.2), ("30k", 32, 1.0 / 3.0)):
        ds, frame = synthetic_frame(beams, azimuth, (225, 400))
        feats = features_of(model, frame)
        data = build_view(prepare.source_from_dataset(ds, 0), features=feats, superpixels="synthetic-vfm",
                          segments=True)
        page = write_view(data, out_dir / f"interactive-{label}.html")
        with Browser(1280, 800) as b:
            ready = b.open(page)
            b.js_async("largeadViewer.setMode('gt')")
            runs = [b.js_async("largeadViewer.benchmark(60)") for _ in range(3)]
            bench = {key: {"median": float(np.median([r[key]["median"] for r in runs])),
                           "p95": float(np.median([r[key]["p95"] for r in runs]))}
                     for key in ("render_ms", "frame_interval_ms")}
            bench["canvas"] = runs[0]["canvas"]
            modes = [m for m in b.js("return largeadViewer.modes()") if m != "similarity"]
            first = {m: b.js_async(f"largeadViewer.timeModeSwitch('{m}')") for m in modes}
            again = {m: b.js_async(f"largeadViewer.timeModeSwitch('{m}')") for m in modes}
            switch = {m: {"first": round(first[m], 1), "again": round(again[m], 1)} for m in modes}
            q = int(np.flatnonzero(data.arrays["gt"] == 8)[0]) if (data.arrays["gt"] == 8).any() else 0
            t0 = time.perf_counter()
            b.js_async(f"largeadViewer.pickIndex({q})")
            pick_total = (time.perf_counter() - t0) * 1e3
            timings = b.js("return largeadViewer.lastTimings")
            picks = b.js("""
                const v = largeadViewer; v.resetView();
                let t = performance.now(); v.pickAt(640, 300); const cold = performance.now() - t;
                t = performance.now();
                for (let k = 0; k < 10; k++) v.pickAt(600 + 8 * k, 300);
                const warm = (performance.now() - t) / 10;
                return [cold, warm];""")
            errors = b.js("return largeadViewer.errors")
        row = {"points": frame.num_points, "file_mb": round(page.stat().st_size / 1e6, 2), "ready_s": round(ready, 2),
               "render_ms_median": round(bench["render_ms"]["median"], 1),
               "render_ms_p95": round(bench["render_ms"]["p95"], 1),
               "frame_interval_ms_median": round(bench["frame_interval_ms"]["median"], 1),
               "canvas": bench["canvas"], "mode_switch_ms": switch,
               "similarity_ms": round(timings["similarity_ms"], 1), "click_to_recoloured_ms": round(pick_total, 1),
               "pick_under_cursor_ms": {"after_camera_move": round(picks[0], 1), "cached": round(picks[1], 2)},
               "errors": errors}
        print(f"{label}: " + json.dumps(row))
        results.append(row)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="encoder folder / zoo name (default: random MinkUNet-34)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--keep", default=None, help="keep the pages in this folder (default: a temporary one)")
    parser.add_argument("--skip-size", action="store_true")
    parser.add_argument("--skip-browser", action="store_true")
    args = parser.parse_args(argv)
    model = load_model(args.model)
    out_dir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="largead-viewer-bench-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"model": model.name}
    if not args.skip_size:
        results["size"] = sizes(model, out_dir)
    if not args.skip_browser:
        results["interactivity"] = interactivity(model, out_dir)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
