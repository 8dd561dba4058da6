"""Benchmark MinkUNet on every installed sparse backend, per precision: eval forward, forward+backward, embed.

    python scripts/benchmark.py                      # full run (quiet machine!), JSON lines on stdout
    python scripts/benchmark.py --quick              # smoke run on a tiny scan
    python scripts/benchmark.py --precision fp32,bf16 --rounds 3 --out bench.jsonl --table

Cases (generated, deterministic): ``nuscenes32`` - a 32-beam spinning scan (elevation -30..+10 deg, 1800 returns
per ring) of a street scene in SLidR's cylindrical grid (0.1 m, 1 deg, 0.1 m), about 30-35k voxels;
``kitti64`` - a 64-beam scan (elevation -25..+3 deg, 2000 returns per ring) in a 5 cm Cartesian grid, about 100k
voxels. Each scan is one batch item.

Modes: ``forward`` - eval mode without autograd on voxels (largead.sparse: the inference path ``embed`` uses,
BatchNorm folded into the convolutions, weights cached in the run dtype; MinkowskiEngine: its layers as they are);
``train`` - forward + backward of a squared-feature loss in train mode (bf16: ``torch.autocast``);
``embed`` - ``LargeADEncoder.embed`` on the points (voxelisation, network, per-point features).

Backends: ``torch`` (largead.sparse) on CPU and, when available, on CUDA, in each ``--precision`` (fp32, bf16);
``minkowski`` (MinkowskiEngine, CPU build, float32 only) when it imports. Every (backend, device, precision, case,
mode) runs in a fresh subprocess so memory peaks do not leak between them; with ``--rounds R`` the whole set runs R
times, interleaved (ME, ours fp32, ours bf16, ME, ...), and the median is over every timed run of every round, so
ours and ME see the same machine load. Timing covers building the sparse input (hence the kernel maps) and the
network pass (+ backward in train mode); after ``--warmup`` untimed runs, ``--repeats`` timed runs per round.

Peak memory: on CPU, the process's peak resident set size (``ru_maxrss``) during the runs minus its resident size
just before them (``peak_mem_method: "rss"``; tracemalloc does not see torch's allocations); on CUDA,
``torch.cuda.max_memory_allocated`` during the runs minus the allocation before them (``"cuda_allocated"``).

One JSON object per line: ``{"backend", "device", "precision", "case", "voxels", "points", "mode", "median_ms",
"p90_ms", "runs", "peak_mem_mb", "peak_mem_method", "threads", "variant", "ratio_to_minkowski"}``; the ratio is
median / MinkowskiEngine's fp32 median for the same case and mode (null without ME). ``--table`` also prints the
results as a Markdown table. Timings on a shared or busy machine are noisy: run it alone, or use ``--rounds``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from largead.fileio import atomic_write_text

CASES = {
    # name: (beams, returns per ring, elevation range deg, voxel size, cylindrical)
    "nuscenes32": (32, 1800, (-30.0, 10.0), (0.1, 1.0, 0.1), True),
    "kitti64": (64, 2000, (-25.0, 3.0), (0.05, 0.05, 0.05), False),
    "tiny": (8, 120, (-25.0, 5.0), (0.1, 1.0, 0.1), True),
}
QUICK_CASES = ("tiny",)
MODES = ("forward", "train", "embed")


def spinning_scan(beams: int, per_ring: int, elevation: tuple[float, float], seed: int = 0) -> np.ndarray:
    """A spinning-LiDAR scan (N, 4) float32 of a street: ground at -1.8 m, building facades 8-25 m away whose
    distance changes every few degrees, parked cars, poles, vegetation and far returns; intensity 0-255."""
    rng = np.random.default_rng(seed)
    el = np.deg2rad(np.linspace(elevation[0], elevation[1], beams))
    az = np.linspace(-np.pi, np.pi, per_ring, endpoint=False)
    el, az = np.meshgrid(el, az, indexing="ij")
    el = el.ravel() + rng.normal(0, 2e-4, el.size)
    az = az.ravel() + rng.normal(0, 1e-3, az.size)
    d = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], 1)
    t = np.full(el.size, 80.0)
    ground = np.where(d[:, 2] < -1e-4, -1.8 / np.minimum(d[:, 2], -1e-4), np.inf)
    t = np.minimum(t, ground)
    sector = ((az + np.pi) / np.deg2rad(7.0)).astype(np.int64)  # facades: a new setback every 7 degrees
    setback = np.random.default_rng(seed + 1).uniform(8.0, 25.0, sector.max() + 1)[sector]
    horiz = np.maximum(np.abs(d[:, 1]), 1e-4)
    facade = np.where(np.abs(d[:, 1]) > 0.15, setback / horiz, np.inf)
    facade_z = facade * d[:, 2]
    t = np.minimum(t, np.where((facade_z > -1.8) & (facade_z < 12.0), facade, np.inf))
    clutter = rng.random(el.size) < 0.25  # cars, poles, vegetation: random hits in front of the background
    t = np.where(clutter, np.minimum(t, rng.uniform(3.0, 30.0, el.size)), t)
    t = t * (1.0 + rng.normal(0, 0.003, el.size))
    xyz = d * t[:, None]
    keep = (t < 79.0) & (xyz[:, 2] > -2.5)
    intensity = rng.uniform(0, 255, (int(keep.sum()), 1))
    return np.concatenate([xyz[keep], intensity], 1).astype(np.float32)


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_case(spec: dict) -> dict:
    """Time one (backend, device, precision, case, mode) in this process and return its JSON record."""
    import torch

    from largead.models.encoder import LargeADConfig, LargeADEncoder
    from largead.sparse import batch_voxelize
    from largead.sparse.inference import fused_inference, resolve_precision

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    beams, per_ring, elevation, voxel_size, cylindrical = CASES[spec["case"]]
    scan = spinning_scan(beams, per_ring, elevation)
    scan[:, 3] /= 255.0
    device = torch.device(spec["device"])
    dtype = resolve_precision(spec["precision"], device)
    config = LargeADConfig(backbone=spec["variant"], voxel_size=voxel_size, cylindrical=cylindrical,
                           backend=spec["backend"])
    net = LargeADEncoder(config).to(device)
    batch = batch_voxelize([scan], config.grid)
    coords, feats = batch.coords.to(device), batch.feats.to(device)
    mode = spec["mode"]
    net.train(mode == "train")
    ops = net._ops
    cuda = device.type == "cuda"
    torch_backend = spec["backend"] == "torch"
    pairs = net.conv_bn_pairs() if torch_backend else []

    def step() -> None:
        if mode == "train":
            net.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                out = net(ops.sparse_input(coords, feats))
            out.F.float().square().mean().backward()
        elif mode == "forward":
            with torch.no_grad():
                if torch_backend:
                    with fused_inference(net, dtype, pairs, inplace_relu=True, inplace_add=True):
                        net(ops.sparse_input(coords, feats))
                else:
                    net(ops.sparse_input(coords, feats))
        else:
            with torch.no_grad():
                net.embed(scan, precision=spec["precision"])
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_mb()
    for _ in range(spec["warmup"]):
        step()
    times = []
    for _ in range(spec["repeats"]):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1000.0)
    if cuda:
        peak, method = (torch.cuda.max_memory_allocated() - base) / 2**20, "cuda_allocated"
    else:
        peak, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - base, "rss"
    return {"backend": spec["backend"], "device": spec["device"], "precision": str(dtype).replace("torch.", ""),
            "case": spec["case"], "voxels": int(coords.shape[0]), "points": int(scan.shape[0]), "mode": mode,
            "times_ms": [round(t, 2) for t in times], "peak_mem_mb": round(max(peak, 0.0), 1),
            "peak_mem_method": method, "threads": spec["threads"], "variant": spec["variant"]}


def installed_backends(precisions: list[str]) -> list[tuple[str, str, str]]:
    """``(backend, device, precision)`` triples that can run here (MinkowskiEngine first, float32 only)."""
    import torch

    from largead.models.minkowski import minkowski_available

    triples = [("torch", "cpu", p) for p in precisions]
    if torch.cuda.is_available():
        triples += [("torch", "cuda", p) for p in precisions]
    if minkowski_available():
        triples.insert(0, ("minkowski", "cpu", "fp32"))  # first, so the others can report a ratio to it
    return triples


def _run_isolated(spec: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"])}
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark case {spec} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _machine() -> str:
    import platform

    import torch

    from largead.sparse.inference import native_bf16

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} logical CPUs, native bf16: {native_bf16('cpu')}, torch {torch.__version__}, "
            f"load average {os.getloadavg()[0]:.2f}")


def markdown_table(records: list[dict]) -> str:
    """The records as a Markdown table: one row per case/mode/backend/precision, ratio to ME fp32."""
    lines = ["| case | voxels | mode | backend | precision | median ms | vs ME fp32 | peak memory MB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        ratio = f"{r['ratio_to_minkowski']:.2f}x" if r.get("ratio_to_minkowski") is not None else "-"
        backend = "MinkowskiEngine" if r["backend"] == "minkowski" else f"largead.sparse ({r['device']})"
        lines.append(f"| {r['case']} | {r['voxels']:,} | {r['mode']} | {backend} | {r['precision']} | "
                     f"{r['median_ms']:.0f} | {ratio} | {r['peak_mem_mb']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny scan, minkunet14, 1 warm-up, 3 runs")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case and round (default 5; quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 2; quick 1)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds of the whole set (default 1)")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=None)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--precision", default="fp32,bf16",
                        help="comma-separated precisions of largead.sparse: fp32, bf16, auto (default fp32,bf16)")
    parser.add_argument("--variant", default=None, help="MinkUNet variant (default minkunet34; quick minkunet14)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON lines to this file")
    parser.add_argument("--table", action="store_true", help="also print a Markdown table")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        print(json.dumps(run_case(json.loads(args.worker))))
        return 0

    quick = args.quick
    cases = args.cases or (list(QUICK_CASES) if quick else ["nuscenes32", "kitti64"])
    repeats = args.repeats if args.repeats is not None else (3 if quick else 5)
    warmup = args.warmup if args.warmup is not None else (1 if quick else 2)
    variant = args.variant or ("minkunet14" if quick else "minkunet34")
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    bad = [p for p in precisions if p not in ("fp32", "bf16", "auto")]
    if bad or not precisions:
        parser.error(f"--precision takes fp32, bf16 and/or auto (comma-separated), got {args.precision!r}")
    if repeats < 1 or warmup < 0 or args.threads < 1 or args.rounds < 1:
        parser.error("--repeats, --rounds and --threads must be >= 1, --warmup >= 0")

    print(f"# machine: {_machine()}", file=sys.stderr, flush=True)
    triples = installed_backends(precisions)
    times: dict[tuple, list[float]] = {}
    last: dict[tuple, dict] = {}
    peaks: dict[tuple, float] = {}
    order = [(case, mode, t) for case in cases for mode in args.modes for t in triples]
    for rnd in range(args.rounds):
        for case, mode, (backend, device, precision) in order:
            spec = {"backend": backend, "device": device, "precision": precision, "case": case, "mode": mode,
                    "threads": args.threads, "repeats": repeats, "warmup": warmup, "variant": variant}
            rec = _run_isolated(spec)
            key = (case, mode, backend, device, precision)
            times.setdefault(key, []).extend(rec.pop("times_ms"))
            peaks[key] = max(peaks.get(key, 0.0), rec["peak_mem_mb"])
            last[key] = rec
            print(f"# round {rnd + 1}/{args.rounds} {case} {mode} {backend} {device} {precision}: "
                  f"{' '.join(f'{t:.0f}' for t in times[key][-repeats:])} ms", file=sys.stderr, flush=True)
    records = []
    for case, mode, (backend, device, precision) in order:
        key = (case, mode, backend, device, precision)
        rec = dict(last[key])
        arr = np.asarray(times[key])
        rec.update(median_ms=round(float(np.median(arr)), 2), p90_ms=round(float(np.percentile(arr, 90)), 2),
                   runs=int(arr.size), peak_mem_mb=peaks[key])
        me = times.get((case, mode, "minkowski", "cpu", "fp32"))
        rec["ratio_to_minkowski"] = (round(rec["median_ms"] / float(np.median(me)), 3)
                                     if me and device == "cpu" else None)
        print(json.dumps(rec), flush=True)
        records.append(rec)
    if args.table:
        print(markdown_table(records))
    if args.out is not None:
        atomic_write_text(args.out, "".join(json.dumps(r) + "\n" for r in records))
    return 0 if all(math.isfinite(r["median_ms"]) for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
