"""The picture of ``largead view`` in the docs (docs/viewer.png): a page for three frames of the synthetic world (the
demo's 8-beam LiDAR) with six cameras, an encoder's features and synthetic-vfm superpoints, opened in headless
Chromium with a point on a car clicked (the similarity mode, the paper's Figure 4), captured and reduced to 256
colours.

    python scripts/viewer_screenshot.py --model outputs/demo/pretrain/encoder [--out docs/viewer.png]

Needs Chromium + ChromeDriver and selenium (see largead.viewer.browser). The page itself is kept (``--html``).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

from largead.viewer import prepare_view, write_view
from largead.viewer.browser import Browser

# the sensor the demo pretrains on (training/configs/synthetic.yaml: 8 beams, 2-degree columns, 30 m), where its
# encoder's features mean something, with six cameras for the picture
DATASET_OPTIONS = {"num_sequences": 1, "frames_per_sequence": 5, "beams": 8, "azimuth_resolution": 2.0,
                   "max_range": 30.0, "num_cameras": 6, "image_size": [225, 400]}


def car_query(labels: np.ndarray, instances: np.ndarray, points: np.ndarray, car: int) -> int:
    """A point on the car with the most points: the one nearest to that car's median position."""
    on = np.flatnonzero(labels == car)
    if len(on) == 0:
        raise ValueError("no car in the frame")
    ids, inv, counts = np.unique(instances[on], return_inverse=True, return_counts=True)
    members = on[inv == int(np.argmax(counts))]
    centre = np.median(points[members], axis=0)
    return int(members[np.argmin(np.linalg.norm(points[members] - centre, axis=1))])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="encoder folder or zoo name (the demo's: "
                                                       "outputs/demo/pretrain/encoder)")
    parser.add_argument("--out", default="docs/viewer.png")
    parser.add_argument("--html", default="outputs/viewer/view.html")
    parser.add_argument("--size", default="1400x860", help="browser window, WxH CSS pixels")
    args = parser.parse_args(argv)
    from largead.data import get_dataset
    from largead.data.synthetic import SYNTHETIC_CLASSES

    frame = get_dataset("synthetic", split="val", **DATASET_OPTIONS)[0]
    query = car_query(frame.labels, frame.instances, frame.points[:, :3], SYNTHETIC_CLASSES.index("car"))
    data = prepare_view(dataset="synthetic", split="val", index=0, frames=3, dataset_options=DATASET_OPTIONS,
                        model=args.model, superpixels="synthetic-vfm", query=query,
                        title="largead view: synthetic world, 3 frames, demo encoder")
    page = write_view(data, args.html)
    print(f"wrote {page} ({page.stat().st_size / 1e6:.1f} MB), query point {query}")
    width, height = (int(v) for v in args.size.split("x"))
    with Browser(width, height) as b:
        b.open(page)
        target = data.arrays["positions"][query].astype(float) / 2  # between the sensor and the clicked car
        b.js("largeadViewer.setView(arguments[0])",
             {"position": (target + [6.0, -15.0, 9.0]).tolist(), "target": target.tolist()})
        b.js("largeadViewer.setPointSize(4); largeadViewer.setShowAll(true)")
        b.js_async(f"largeadViewer.pickIndex({query})")
        errors = b.js("return largeadViewer.errors")
        if errors:
            raise RuntimeError(f"the page reported errors: {errors}")
        png = b.driver.get_screenshot_as_png()
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    small = img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    small.save(out, optimize=True)
    print(f"wrote {out} ({img.size[0]} x {img.size[1]}, {out.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
