"""The LargeAD paper's linear-probing claims in miniature, on the procedural synthetic world (CPU).

    python scripts/reproduce_synthetic.py --output-dir outputs/reproduce_synthetic
    python scripts/reproduce_synthetic.py --smoke --output-dir /tmp/repro      # every code path, tiny budget

Five encoders, each probed with a linear classifier on the same labelled frames and scored on held-out frames:

==========================  ==================================================================================
``random``                  no pretraining (random initialisation)
``slic``                    superpixel-to-superpoint distillation with SLIC superpixels (SLidR)
``synthetic-vfm``           the same with the synthetic world's SEEM-like VFM superpixels (Seal / LargeAD Table 8)
``synthetic-vfm+temporal``  + superpoint temporal consistency and point-to-segment terms (LargeAD Table 9)
``multi-source``            + a second LiDAR (twice the beams, intensity 0-1, another part of the world) with
                            per-dataset input normalisation and the cross-dataset term, same step budget
                            (LargeAD Table 11)
==========================  ==================================================================================

Every pretrained variant gets the same budget (steps x batch) and runs for each seed (pretraining seed = probe seed);
mIoU is the standard mean over classes present (``miou``) on the validation sequences; the table reports the mean,
the sample standard deviation and the per-seed values, and a bar chart shows mean +- std with the seeds as dots.
The probe is the real linear-probing pipeline (``largead.training.probe.linear_probe``: backbone frozen in eval mode, rotation/flip
augmentation, CE + Lovasz) with a miniature schedule; the pretraining is ``training/pretrain.py`` with the
``synthetic`` config adapted per variant (:func:`pretrain_config`). Miniature choices (not the paper's): backbone
``minkunet14`` by default, a small world, few steps, probe lr 0.2 without batch scaling. Runs are resumable:
re-running with the same ``--output_dir`` reuses finished pretraining/probing runs.

Sensors: the probed sensor is nuScenes-like (intensity 0-255) and the second one KITTI-like (intensity 0-1) with
twice its beams. The defaults use 16 and 32 beams (the 32 / 64 of the real sensors halved, for time; pass
``--beams 32`` for the full-size pair). Budget: the default run (5 variants x 3 seeds) took 12.4 minutes on the
project's 2-core machine, its first half under contention from other jobs; on the idle machine a 20-step
pretraining took ~8 s and a 40-step probe ~3-5 s, the rest is one-off work (teacher training, cached; segments).
``--pretrain-steps`` / ``--probe-steps`` scale the run.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from largead.config import format_override
from largead.errors import run_cli
from largead.training import parse_cli
from largead.fileio import atomic_path, atomic_write_text

VARIANTS: dict[str, dict[str, Any] | None] = {
    "random": None,
    "slic": {"source": "slic", "temporal": False, "multi": False},
    "synthetic-vfm": {"source": "synthetic-vfm", "temporal": False, "multi": False},
    "synthetic-vfm+temporal": {"source": "synthetic-vfm", "temporal": True, "multi": False},
    "multi-source": {"source": "synthetic-vfm", "temporal": True, "multi": True},
}


@dataclass
class Budget:
    """World and schedule of one reproduction (the defaults are the ~20-minute run)."""

    backbone: str = "minkunet14"
    world: dict[str, Any] = field(default_factory=lambda: {
        "num_sequences": 2, "frames_per_sequence": 4, "beams": 16, "azimuth_resolution": 3.0, "max_range": 25.0,
        "num_cameras": 2, "image_size": [48, 80]})
    second_sensor: dict[str, Any] = field(default_factory=lambda: {"beams": 32, "intensity_scale": 1.0, "seed": 1})
    val_sequences: int = 1
    pretrain_steps: int = 20
    pretrain_batch: int = 2
    probe_steps: int = 40
    probe_batch: int = 2
    probe_lr: float = 0.2
    max_rows: int = 2048
    teacher: dict[str, Any] = field(default_factory=lambda: {"steps": 300, "batch_size": 8})  # trained once, cached


SMOKE = Budget(
    world={"num_sequences": 1, "frames_per_sequence": 3, "beams": 4, "azimuth_resolution": 4.0, "max_range": 25.0,
           "num_cameras": 1, "image_size": [24, 40]},
    second_sensor={"beams": 8, "intensity_scale": 1.0, "seed": 1},
    pretrain_steps=1, pretrain_batch=1, probe_steps=1, probe_batch=1, max_rows=256,
    teacher={"steps": 20, "batch_size": 4})


def _sensor_a(b: Budget, seed: int = 0) -> dict[str, Any]:
    return {"seed": seed, **b.world}


def pretrain_config(variant: dict[str, Any], b: Budget, seed: int) -> dict[str, Any]:
    """The ``synthetic`` pretraining config (training/configs/synthetic.yaml) adapted to one variant and seed.

    Built as a whole mapping (written to the run folder) rather than ``key=value`` overrides, because overrides
    merge into the base mapping and cannot remove a key (e.g. the SEEM granularity option for SLIC).
    """
    from largead.config import load_yaml
    from largead.training.pretrain import resolve_config_path

    cfg = load_yaml(resolve_config_path("synthetic"))
    sources = [{"name": "synthetic", "split": "train", "label": "synthetic", "options": _sensor_a(b)}]
    if variant["multi"]:
        sources.append({"name": "synthetic", "split": "train", "label": "synthetic-64",
                        "options": {**_sensor_a(b), **b.second_sensor}})
    cfg["name"] = f"reproduce-synthetic-{'multi' if variant['multi'] else 'single'}"
    cfg["data"] = sources
    cfg["superpixels"] = {"source": variant["source"],
                          "options": {"granularity": "seem"} if variant["source"] == "synthetic-vfm" else {}}
    cfg["teacher"] = {"name": "synthetic", "options": dict(b.teacher)}
    cfg["model"] = {**cfg.get("model", {}), "backbone": b.backbone}
    cfg["objective"] = {**cfg.get("objective", {}), "max_rows": b.max_rows, "weights": {
        "vfm": 1.0, "tmp": 1.0 if variant["temporal"] else 0.0, "p2s": 1.0 if variant["temporal"] else 0.0,
        "cdp": 1.0 if variant["multi"] else 0.0}}
    cfg["pipeline"] = {**cfg.get("pipeline", {}), "temporal": bool(variant["temporal"])}
    cfg["train"] = {**cfg.get("train", {}), "steps": b.pretrain_steps, "batch_size": b.pretrain_batch,
                    "seed": seed, "checkpoint_every": 0, "log_with": None}
    cfg["norm_frames"] = 2
    return cfg


def probe_overrides(b: Budget) -> list[str]:
    """Fine-tuning config edits of the miniature linear probe (same for every variant)."""
    return [f"model.backbone={b.backbone}", f"batch_size={b.probe_batch}", "epochs=1000", f"max_steps={b.probe_steps}",
            f"optim.lr={b.probe_lr}", "optim.scale_lr=false", f"checkpointing_steps={b.probe_steps}"]


def _probe_world(b: Budget, **extra: Any) -> dict[str, Any]:
    return {**_sensor_a(b), "num_cameras": 1, "image_size": [8, 8], **extra}  # cameras are not used by the probe


def run_one(name: str, seed: int, b: Budget, root: Path) -> dict[str, Any]:
    """Pretrain (unless ``random``), probe and evaluate one variant for one seed; returns timings and mIoU."""
    from largead.training import pretrain
    from largead.training.probe import linear_probe

    variant = VARIANTS[name]
    run = root / name / f"seed{seed}"
    t0 = time.time()
    encoder = None
    if variant is not None:
        import yaml

        cfg_path = run / "pretrain-config.yaml"
        atomic_write_text(cfg_path, yaml.safe_dump(pretrain_config(variant, b, seed), sort_keys=False))
        res = pretrain.main(pretrain.parse_args(["--config", str(cfg_path), "--output-dir", str(run / "pretrain")]))
        encoder = res["encoder_dir"]
    t1 = time.time()
    result = linear_probe(encoder, run / "probe", dataset="synthetic", train_options=_probe_world(b),
                          val_options=_probe_world(b, num_sequences=b.val_sequences), seed=seed,
                          overrides=probe_overrides(b), results_path=run / "eval.json", update_card=False)
    t2 = time.time()
    return {"variant": name, "seed": seed, "miou": result["miou"], "miou_slidr": result["miou_slidr"],
            "accuracy": result["accuracy"], "pretrain_s": t1 - t0, "probe_s": t2 - t1}


def summarise(rows: Sequence[dict[str, Any]], order: Sequence[str]) -> list[dict[str, Any]]:
    """Mean, sample std (ddof 1; nan for one seed), min and max of mIoU per variant, in ``order``."""
    out = []
    for name in order:
        vals = np.array([r["miou"] for r in rows if r["variant"] == name], dtype=np.float64)
        if vals.size == 0:
            continue
        out.append({"variant": name, "n": int(vals.size), "mean": float(vals.mean()),
                    "std": float(vals.std(ddof=1)) if vals.size > 1 else math.nan,
                    "min": float(vals.min()), "max": float(vals.max()), "values": vals.tolist()})
    return out


def markdown_table(summary: Sequence[dict[str, Any]], budget: Budget, seconds: float) -> str:
    lines = ["| Pretraining | LP mIoU % (mean ± std) | per seed | Δ vs random |", "|---|---|---|---|"]
    ref = next((s["mean"] for s in summary if s["variant"] == "random"), None)
    for s in summary:
        std = "n/a" if math.isnan(s["std"]) else f"{100 * s['std']:.2f}"
        delta = "" if ref is None or s["variant"] == "random" else f"{100 * (s['mean'] - ref):+.2f}"
        seeds = " / ".join(f"{100 * v:.2f}" for v in s["values"])
        lines.append(f"| {s['variant']} | {100 * s['mean']:.2f} ± {std} | {seeds} | {delta} |")
    footer = (f"Backbone {budget.backbone}; pretraining {budget.pretrain_steps} steps x batch "
              f"{budget.pretrain_batch}; linear probe {budget.probe_steps} steps x batch {budget.probe_batch}; "
              f"world {json.dumps(budget.world)}; {summary[0]['n'] if summary else 0} seeds; total "
              f"{seconds / 60:.1f} min.")
    lines += ["", footer]
    return "\n".join(lines) + "\n"


def bar_chart(summary: Sequence[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    x = np.arange(len(summary))
    means = [100 * s["mean"] for s in summary]
    stds = [0.0 if math.isnan(s["std"]) else 100 * s["std"] for s in summary]
    ax.bar(x, means, yerr=stds, capsize=4, color="#4C72B0", alpha=0.85)
    for i, s in enumerate(summary):
        ax.scatter(np.full(len(s["values"]), i), [100 * v for v in s["values"]], color="k", s=10, zorder=3)
    ax.set_xticks(x, [s["variant"] for s in summary], rotation=15, ha="right")
    ax.set_ylabel("linear-probe mIoU (%)")
    ax.set_title("LargeAD in miniature (synthetic world)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="reproduce_synthetic.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", default="outputs/reproduce_synthetic")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--smoke", action="store_true", help="tiny world and 1-step schedules (tests every code path)")
    p.add_argument("--backbone", default=None, help="override the budget's backbone (e.g. minkunet34)")
    p.add_argument("--pretrain-steps", type=int, default=None)
    p.add_argument("--probe-steps", type=int, default=None)
    p.add_argument("--beams", type=int, default=None, help="beams of the probed sensor (the second gets twice as many)")
    return parse_cli(p, argv)


def main(args: argparse.Namespace) -> dict[str, Any]:
    from largead.evaluation.report import write_results

    budget = SMOKE if args.smoke else Budget()
    for key in ("backbone", "pretrain_steps", "probe_steps"):
        if getattr(args, key) is not None:
            budget = replace(budget, **{key: getattr(args, key)})
    if args.beams is not None:
        budget = replace(budget, world={**budget.world, "beams": args.beams},
                         second_sensor={**budget.second_sensor, "beams": 2 * args.beams})
    root = Path(args.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    start = time.time()
    rows = [run_one(name, seed, budget, root) for name in args.variants for seed in args.seeds]
    seconds = time.time() - start
    summary = summarise(rows, args.variants)
    results = {"budget": asdict(budget), "seeds": list(args.seeds), "runs": rows, "summary": summary,
               "seconds": seconds}
    write_results(root / "results.json", results)
    table = markdown_table(summary, budget, seconds)
    atomic_write_text(root / "results.md", "# LargeAD in miniature: linear probing on the synthetic world\n\n" + table)
    bar_chart(summary, root / "results.png")
    print(table)
    return results


if __name__ == "__main__":
    run_cli("reproduce_synthetic.py", lambda: main(parse_args()))
