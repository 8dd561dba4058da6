"""How closely bfloat16 features follow float32 ones: per-point cosine similarity of ``embed`` in both precisions.

    python scripts/bf16_agreement.py MODEL [--dataset synthetic] [--official] [--scans 3] [--threads 2]
                                           [--cases nuscenes32,kitti64]

``MODEL``: anything :meth:`LargeADEncoder.from_pretrained` opens (a saved folder, a zoo name). Scans are the
benchmark's generated ones (``scripts/benchmark.py``): nuScenes-like (32 beams) and SemanticKITTI-like (64 beams),
seeds ``0 .. scans-1``, intensities in 0..255 normalised with the model's statistics for ``--dataset``. Every point
of every scan counts. ``--official`` also writes the weights as a SLidR-layout checkpoint (``{"model_points":
{"module.*": ...}}``), loads it back with :func:`largead.load_official_checkpoint` (raw intensity, as official
checkpoints have no normalisation statistics) and measures that encoder too.

Prints one Markdown table row per (encoder, scan kind): points, minimum, 1st percentile and mean cosine similarity,
and the largest absolute difference of a feature component.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import CASES, spinning_scan  # noqa: E402  (the benchmark's scan generator)


def agreement(encoder, scans: list[np.ndarray], dataset: str | None) -> dict[str, float]:
    """Cosine similarity statistics of ``embed`` in bf16 against fp32 over every point of ``scans``."""
    cos, diff, points = [], 0.0, 0
    for scan in scans:
        with torch.no_grad():
            ref = encoder.embed(scan, dataset=dataset, precision="fp32")
            low = encoder.embed(scan, dataset=dataset, precision="bf16")
        cos.append(torch.nn.functional.cosine_similarity(low, ref, dim=1))
        diff = max(diff, float((low - ref).abs().max()))
        points += scan.shape[0]
    c = torch.cat(cos).double()
    return {"points": points, "min": float(c.min()), "p1": float(torch.quantile(c, 0.01)), "mean": float(c.mean()),
            "max_abs": diff}


def main(argv: list[str] | None = None) -> None:
    from largead import LargeADEncoder, load_official_checkpoint
    from largead.sparse.inference import native_bf16

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--dataset", default=None, help="normalisation statistics to use (config.input_norm key)")
    parser.add_argument("--official", action="store_true", help="also measure the weights as a SLidR checkpoint")
    parser.add_argument("--scans", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", default="nuscenes32,kitti64", help="scan kinds, comma-separated")
    args = parser.parse_args(argv)
    labels = {"nuscenes32": "nuScenes-like, 32 beams", "kitti64": "SemanticKITTI-like, 64 beams"}
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in labels]
    if unknown or not cases:
        parser.error(f"--cases: unknown {unknown or args.cases!r}; expected some of {', '.join(labels)}")
    torch.set_num_threads(args.threads)
    if not native_bf16():
        print("# note: this CPU has no native bfloat16; bf16 runs emulated (slow) but the numbers still hold")
    encoder = LargeADEncoder.from_pretrained(args.model).eval()
    encoders = [(f"{args.model}", encoder, args.dataset)]
    if args.official:
        state = {f"module.{k}": v for k, v in encoder.state_dict().items()}
        folder = Path(tempfile.mkdtemp(prefix="largead-agreement-"))
        torch.save({"model_points": state}, folder / "official.pt")
        encoders.append(("converted SLidR-layout checkpoint", load_official_checkpoint(folder / "official.pt"), None))
    print("| encoder | scans | points | min | 1st percentile | mean | max abs difference |")
    print("|---|---|---|---|---|---|---|")
    for name, enc, dataset in encoders:
        for case in cases:
            label = labels[case]
            beams, per_ring, elevation, _, _ = CASES[case]
            scans = []
            for seed in range(args.scans):
                scan = spinning_scan(beams, per_ring, elevation, seed=seed)
                if dataset is None and enc.config.input_norm:
                    scan[:, 3] /= 255.0
                scans.append(scan)
            r = agreement(enc, scans, dataset)
            print(f"| {name} | {label} | {r['points']:,} | {r['min']:.5f} | {r['p1']:.6f} | {r['mean']:.6f} | "
                  f"{r['max_abs']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
