"""``largead demo``: the main job, end to end on the synthetic world, in minutes on a laptop CPU.

1. **Superpixels.** ``scripts/generate_superpixels.py`` (:func:`step_superpixels`) runs the pretraining config's superpixel source
   (``synthetic-vfm`` at SEEM granularity: SEEM-like segments of the synthetic cameras) over every camera image of
   the pretraining data and writes the maps as PNGs in the official layout,
   ``<output_dir>/superpixels/superpixels_<tag>/<camera token>.png`` (+ ``_manifest.json``).
2. **Pretraining.** :mod:`largead.training.pretrain` (:func:`step_pretrain`) runs ``training/configs/synthetic.yaml`` (quick mode:
   ``synthetic-tiny.yaml``), reading the superpixels from those PNGs as it would read SEEM's (the config is copied
   to ``<output_dir>/configs/pretrain.yaml`` with its superpixel source replaced by ``precomputed``). The result is a
   Hub-ready folder (``config.json``, ``model.safetensors``, ``README.md`` model card).
3. **Linear probe.** :func:`largead.training.probe.linear_probe` (:func:`step_linear_probe`) trains a classifier on the frozen pretrained
   encoder and, as the baseline, on the same architecture at random initialisation, on labelled frames of the
   synthetic world seen by the same LiDAR; ``training/evaluate.py`` measures both per point on the validation split.
   The pretrained encoder's mIoU goes into its card's ``model-index``; the card also gets a table of both numbers.
4. **Pictures.** (:func:`step_pictures`) ``view.html``, an interactive 3D view of a validation scan (click a point
   to colour every point by its feature's similarity; cameras, superpoints, temporal segments), and the paper's
   Figure 4 on a validation scan (cosine similarity of every point's feature to a query
   point on a car, random init vs pretrained, next to the ground truth) and a bird's-eye view of the pretrained
   features (first three principal components as RGB).

The training code is the package's own (:mod:`largead.training`); each step builds its arguments with the entry
point's own ``parse_args``, so the demo runs exactly what a user's command line would.

Every step is seeded (the sparse engine's scatter-adds may still differ in the last bits between runs). Re-running
into the same folder resumes: finished training runs are not repeated (their scripts resume from their last
checkpoint); a folder holding a run with other settings is refused with a message (use another ``--output-dir``).
On a busy machine, ``OMP_NUM_THREADS=1`` avoids oversubscribing the cores (much faster there).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from largead.fileio import atomic_path, atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from largead.training.pretrain import PretrainConfig

__all__ = ["FULL", "QUICK", "DemoPlan", "DemoResult", "run_demo", "save_pictures", "step_linear_probe",
           "step_pictures", "step_pretrain", "step_superpixels"]

CARD_SECTION = "## Linear probe on the synthetic world (`largead demo`)"


@dataclass(frozen=True)
class DemoPlan:
    """How big each step is.

    ``pretrain_config``: name of a config in ``training/configs``; ``pretrain_overrides``: ``key=value`` overrides
    passed to ``pretrain.py``; ``pretrain_max_steps``: stop pretraining after this many steps (``None``: the
    config's schedule). The probe uses the pretraining data's LiDAR (same dataset options, no cameras) with
    ``probe_train_sequences`` / ``probe_val_sequences`` sequences of the train / val splits, trains for
    ``probe_epochs`` epochs at ``probe_batch_size`` frames per step with ``probe_overrides`` for ``finetune.py``
    (same for both encoders).
    """

    name: str
    pretrain_config: str
    pretrain_overrides: tuple[str, ...] = ()
    pretrain_max_steps: int | None = None
    probe_train_sequences: int = 2
    probe_val_sequences: int = 1
    probe_frames_per_sequence: int | None = None
    probe_epochs: int = 4
    probe_batch_size: int = 4
    probe_overrides: tuple[str, ...] = ()


FULL = DemoPlan(
    name="full",
    pretrain_config="synthetic",
    pretrain_overrides=("train.checkpoint_total_limit=1",),
    probe_train_sequences=2,
    probe_val_sequences=1,
    probe_epochs=10,
    probe_batch_size=4,
    probe_overrides=("optim.lr=0.1", "optim.base_batch_size=4", "total_limit=1"),
)
"""``largead demo``: a few minutes on 2 CPU cores. Measured on this world (linear-probe mIoU, pretrained vs random
init 7.0%): 40 pretraining steps give 10.0%, 120 steps 15.3% in about 4 minutes in all, hence ``train.steps: 120`` in
``training/configs/synthetic.yaml``.
The probe's learning rate (0.1 at 4 frames per step, cosine, 40 steps) was picked so that both probes converge
within the budget (SLidR's 0.05 at 16 frames, scaled to 4 frames, barely moves a classifier in 40 steps); both
probes use the same settings."""

QUICK = DemoPlan(
    name="quick",
    pretrain_config="synthetic-tiny",
    pretrain_overrides=("train.checkpoint_every=0", "train.checkpoint_total_limit=1"),
    pretrain_max_steps=2,
    probe_train_sequences=1,
    probe_val_sequences=1,
    probe_frames_per_sequence=2,
    probe_epochs=1,
    probe_batch_size=2,
    probe_overrides=("optim.lr=0.1", "optim.base_batch_size=2", "total_limit=1"),
)
"""``largead demo --quick``: seconds, to check an installation (the numbers mean nothing)."""


@dataclass
class DemoResult:
    """What :func:`run_demo` made. mIoUs are fractions in [0, 1] (per point, validation split); ``dataset_key``
    names the input normalisation to use with the checkpoint (``embed(..., dataset=dataset_key)``)."""

    output_dir: Path
    superpixel_dir: Path
    num_superpixel_maps: int
    checkpoint: Path
    pretrain_steps: int
    miou_pretrained: float
    miou_random: float
    similarity_png: Path
    features_png: Path
    example_scan: Path
    view_html: Path
    dataset_key: str
    seconds: dict[str, float] = field(default_factory=dict)
    summary: str = ""


# ------------------------------------------------------------------------------------------------------- helpers


class _Clock:
    """Wall time of each named step."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self._t = self.start

    def lap(self, name: str) -> float:
        now = time.perf_counter()
        self.seconds[name] = now - self._t
        self._t = now
        return self.seconds[name]

    def total(self) -> float:
        self.seconds["total"] = time.perf_counter() - self.start
        return self.seconds["total"]


def _dataset_label(dataset_name: str, split: str, options: dict[str, Any]) -> str:
    return f"{dataset_name} {split} ({', '.join(f'{k}={v}' for k, v in options.items())})"


# ----------------------------------------------------------------------------------------------------- the steps


def step_superpixels(cfg: PretrainConfig, out: Path, log: Callable[[str], None]) -> tuple[Path, str, list[Path]]:
    """Step 1: ``scripts/generate_superpixels.py`` with the config's source over the camera images of every
    pretraining dataset, into ``out/superpixels``. Returns ``(superpixel root, tag, maps)``."""
    from largead.config import format_override
    from largead.superpixels import generate, get_source
    sp_root = out / "superpixels"
    log(f"\n[1/4] superpixels: scripts/generate_superpixels.py --source {cfg.superpixels.source} "
        f"{format_override(cfg.superpixels.options)} on the camera images of the pretraining data -> {sp_root}")
    tags = set()
    for d in cfg.data:
        options = {**cfg.superpixels.options, **d.superpixels}
        tags.add(get_source(cfg.superpixels.source, **options).tag)
        argv = ["--source", cfg.superpixels.source, "--dataset", d.name, "--split", d.split, "--out", str(sp_root)]
        argv += ["--root", d.root] if d.root is not None else []
        argv += [a for k, v in options.items() for a in ("--option", f"{k}={json.dumps(v)}")]
        argv += [a for k, v in d.options.items() for a in ("--dataset-option", f"{k}={json.dumps(v)}")]
        if generate.main(argv) != 0:
            raise RuntimeError(f"scripts/generate_superpixels.py {' '.join(argv)} failed (its error is printed above)")
    if len(tags) != 1:
        raise ValueError(f"the pretraining datasets use different superpixel settings ({sorted(tags)}); the demo "
                         "reads one superpixel folder")
    tag = tags.pop()
    maps = sorted((sp_root / f"superpixels_{tag}").glob("**/*.png"))
    return sp_root, tag, maps


def step_pretrain(plan: DemoPlan, config_path: Path, sp_root: Path, tag: str, out: Path,
                  log: Callable[[str], None]) -> dict[str, Any]:
    """Step 2: pretraining with the superpixels read back from step 1's PNGs (the config is copied to
    ``out/configs/pretrain.yaml`` with its source replaced by ``precomputed``). Returns the run's summary."""
    from largead.config import ConfigMismatchError, load_yaml
    from largead.training import pretrain

    log(f"\n[2/4] pretraining: training/pretrain.py --config {config_path.name}, superpixels read from the PNGs")
    raw = load_yaml(config_path)
    raw["superpixels"] = {"source": "precomputed", "options": {"root": str(sp_root.resolve()), "kind": tag}}
    for d in raw.get("data", []):
        d.pop("superpixels", None)
    derived = out / "configs" / "pretrain.yaml"
    _write_yaml(derived, raw, f"training/configs/{config_path.name} as run by `largead demo` ({plan.name}): "
                              f"superpixels read from the PNGs of step 1")
    argv = ["--config", str(derived), "--output-dir", str(out / "pretrain"), *plan.pretrain_overrides]
    if plan.pretrain_max_steps is not None:
        argv += ["--max-steps", str(plan.pretrain_max_steps)]
    try:
        return pretrain.main(pretrain.parse_args(argv))
    except ConfigMismatchError as err:
        raise ConfigMismatchError(f"{out} holds an earlier demo run made with other settings (another mode, or an "
                                  f"edited config): remove it or pass another --output-dir. Details: {err}") from None


def step_linear_probe(plan: DemoPlan, cfg: PretrainConfig, run: dict[str, Any], config_name: str, out: Path,
                      log: Callable[[str], None]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Step 3: linear probes of the pretrained encoder and of a random-init one (same architecture, same budget) on
    labelled frames of the pretraining world's LiDAR; both mIoUs go into the card of the checkpoint
    (``run["encoder_dir"]``). Returns ``({"pretrained": results, "random": results}, validation reader options)``."""
    from largead.cards import set_card_section, update_card_results
    from largead.config import format_override
    from largead.training.probe import linear_probe

    checkpoint = Path(run["encoder_dir"])
    data0 = cfg.data[0]
    probe_options = {**data0.options, "num_cameras": 0}
    if plan.probe_frames_per_sequence is not None:
        probe_options["frames_per_sequence"] = plan.probe_frames_per_sequence
    train_options = {**probe_options, "num_sequences": plan.probe_train_sequences}
    val_options = {**probe_options, "num_sequences": plan.probe_val_sequences}
    log(f"\n[3/4] linear probe (training/finetune.py --mode linear_probe, training/evaluate.py) on "
        f"{_dataset_label(data0.name, 'train', train_options)} -> val")
    overrides = [f"epochs={plan.probe_epochs}", f"batch_size={plan.probe_batch_size}", "checkpointing_steps=1000000",
                 *plan.probe_overrides]
    results: dict[str, dict[str, Any]] = {}
    for name, pretrained in (("pretrained", checkpoint.resolve()), ("random", None)):
        results[name] = linear_probe(pretrained, out / f"probe-{name}", dataset=data0.name,
                                     train_options=train_options, val_options=val_options, overrides=overrides)
        log(f"{name:10s} encoder: mIoU {100 * results[name]['miou']:.2f}% on {results[name]['num_frames']} val "
            "frames")
    update_card_results(checkpoint, {**results["pretrained"], "dataset_name": "largead synthetic world"})
    setting = (f"Pretrained by `largead demo` ({run['steps']} steps of `training/configs/{config_name}`) with "
               f"{cfg.superpixels.source} "
               f"{format_override(cfg.superpixels.options)} superpixels written by `scripts/generate_superpixels.py` "
               f"and read back as PNGs. Linear probing (frozen encoder, new 1x1 classifier; `training/finetune.py "
               f"--mode linear_probe`) on {plan.probe_train_sequences} labelled training sequence(s) of the same "
               f"world and LiDAR, {plan.probe_epochs} epoch(s); per-point mIoU on "
               f"{results['pretrained']['num_frames']} validation frames (`training/evaluate.py`).")
    note = ("The synthetic teacher was trained on the synthetic world's own labels, so these numbers show that the "
            "pipeline works, not what a real vision foundation model brings (see `largead.models.image`)."
            if cfg.teacher.name == "synthetic" else "")
    rows = [("this checkpoint (LargeAD pretrained)", results["pretrained"]["miou"]),
            ("random initialisation (baseline)", results["random"]["miou"])]
    table = "\n".join(f"| {name} | {100 * miou:.2f} |" for name, miou in rows)
    set_card_section(checkpoint, CARD_SECTION, f"{setting}\n\n| encoder | mIoU (%) |\n|---|---|\n{table}\n\n{note}")
    log(f"wrote both mIoUs into {checkpoint / 'README.md'}")
    return results, val_options


def step_pictures(cfg: PretrainConfig, checkpoint: Path, val_options: dict[str, Any], steps: int, out: Path,
                  log: Callable[[str], None]) -> tuple[Path, Path, Path, Path, list[str]]:
    """Step 4: Figure 4 and the PCA feature view on a validation scan (:func:`save_pictures`), and the interactive
    3D view of the same scan (:func:`largead.viewer.view`: click a point to see Figure 4 live; the cameras,
    superpoints and temporal segments too). Returns the two pictures, the example scan, ``view.html`` and the
    validation split's class names."""
    from largead.data import get_dataset
    from largead.viewer import view
    from largead.viz import frame_with_query

    log("\n[4/4] pictures: similarity to a query point on a car (the paper's Figure 4), PCA feature view, "
        "interactive 3D view")
    data0 = cfg.data[0]
    key = data0.label or data0.name
    val = get_dataset(data0.name, data0.root, "val", **val_options)
    pictures = save_pictures(checkpoint, val, out, seed=cfg.train.seed, dataset_key=key, steps=steps)
    # the view shows the same scan with its cameras (the probe's validation data has them off)
    view_options = {**data0.options, **{k: v for k, v in val_options.items() if k != "num_cameras"}}
    index, _, query = frame_with_query(val, list(val.class_names))
    view_html = view(dataset=data0.name, root=data0.root, split="val", index=index, frames=3,
                     dataset_options=view_options, model=checkpoint, input_norm_key=key,
                     superpixels=cfg.superpixels.source, superpixel_options=cfg.superpixels.options, query=query,
                     out=out / "view.html", title=f"largead demo: pretrained encoder ({steps} steps)")
    return (*pictures, view_html, list(val.class_names))


# ----------------------------------------------------------------------------------------------------- the demo


def run_demo(output_dir: Path | str = Path("outputs/demo"), quick: bool = False,
             plan: DemoPlan | None = None, log: Callable[[str], None] = print) -> DemoResult:
    """Run the four steps (see the module docstring) into ``output_dir``; print progress and a summary.

    ``quick`` picks :data:`QUICK` (seconds; for checking an installation and for tests) instead of :data:`FULL`;
    ``plan`` overrides both. Returns a :class:`DemoResult` (also written to ``output_dir/demo_results.json``;
    the summary to ``output_dir/summary.txt``).
    """
    from largead.training import pretrain

    plan = plan or (QUICK if quick else FULL)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    clock = _Clock()
    log(f"largead demo ({plan.name}) -> {out}")
    config_path = pretrain.resolve_config_path(plan.pretrain_config)
    cfg = pretrain.load_pretrain_config(str(config_path), plan.pretrain_overrides)

    sp_root, tag, maps = step_superpixels(cfg, out, log)
    log(f"{len(maps)} superpixel maps in {sp_root / f'superpixels_{tag}'} ({clock.lap('superpixels'):.1f} s)")
    run = step_pretrain(plan, config_path, sp_root, tag, out, log)
    checkpoint = Path(run["encoder_dir"])
    log(f"pretrained {run['steps']} steps -> {checkpoint} ({clock.lap('pretraining'):.1f} s)")
    results, val_options = step_linear_probe(plan, cfg, run, config_path.name, out, log)
    clock.lap("linear probe")
    similarity_png, features_png, example_scan, view_html, class_names = step_pictures(
        cfg, checkpoint, val_options, int(run["steps"]), out, log)
    log(f"wrote {similarity_png}, {features_png} and {view_html} ({clock.lap('pictures'):.1f} s)")

    clock.total()
    data0 = cfg.data[0]
    result = DemoResult(output_dir=out, superpixel_dir=sp_root / f"superpixels_{tag}", num_superpixel_maps=len(maps),
                        checkpoint=checkpoint, pretrain_steps=int(run["steps"]),
                        miou_pretrained=float(results["pretrained"]["miou"]),
                        miou_random=float(results["random"]["miou"]), similarity_png=similarity_png,
                        features_png=features_png, example_scan=example_scan, view_html=view_html,
                        dataset_key=data0.label or data0.name, seconds=dict(clock.seconds))
    result.summary = _summary(result, plan)
    log("\n" + result.summary)
    atomic_write_text(out / "summary.txt", result.summary + "\n")
    atomic_write_json(out / "demo_results.json", {
        "plan": plan.name, "checkpoint": str(checkpoint), "pretrain_steps": result.pretrain_steps,
        "miou_pretrained": result.miou_pretrained, "miou_random": result.miou_random,
        "iou_per_class": {k: results[k]["iou_per_class"] for k in results}, "class_names": class_names,
        "superpixel_maps": len(maps), "similarity_png": str(similarity_png), "features_png": str(features_png),
        "view_html": str(view_html),
        "seconds": {k: round(v, 1) for k, v in clock.seconds.items()}}, sort_keys=True)
    return result


def save_pictures(checkpoint: Path, dataset: Any, out: Path, seed: int, dataset_key: str | None,
                  steps: int) -> tuple[Path, Path, Path]:
    """Figure 4 and the PCA feature view of the first scan of ``dataset`` with a car, into ``out``.

    The pretrained encoder is loaded from ``checkpoint``; the random-init one is the same architecture built after
    ``torch.manual_seed(seed)``, i.e. the weights ``training/pretrain.py`` started from. ``dataset_key`` selects the
    input normalisation. Returns ``(similarity.png, features.png, example_scan.npy)`` (the scan, for
    ``largead embed``)."""
    import torch

    from largead import LargeADEncoder
    from largead.viz import frame_with_query, save_feature_bev, save_similarity_figure

    class_names = list(dataset.class_names)
    _, frame, query = frame_with_query(dataset, class_names)
    points = np.ascontiguousarray(frame.points[:, :4], dtype=np.float32)
    example_scan = out / "example_scan.npy"
    _save_npy(example_scan, points)
    encoder = LargeADEncoder.from_pretrained(str(checkpoint)).eval()
    torch.manual_seed(seed)
    initial = LargeADEncoder(encoder.config).eval()
    with torch.no_grad():
        f_pre = encoder.embed(torch.from_numpy(points), dataset=dataset_key).numpy()
        f_init = initial.embed(torch.from_numpy(points), dataset=dataset_key).numpy()
    # zoom on the query with some context; sparse scans need large markers
    reach = float(np.percentile(np.abs(points[:, :2]), 98))
    extent = float(np.clip(np.abs(points[query, :2]).max() + 10.0, 15.0, max(reach, 15.0)))
    size = float(np.clip(2.0e4 / max(len(points), 1) * (20.0 / extent) ** 2, 1.0, 12.0))
    similarity_png = save_similarity_figure(
        points, [("random init", f_init), (f"LargeAD pretrained ({steps} steps)", f_pre)], query,
        out / "similarity.png", extent=extent, labels=frame.labels, class_names=class_names, point_size=size)
    features_png = save_feature_bev(points, f_pre, out / "features.png", extent=extent, point_size=size,
                                    title=f"pretrained features, PCA -> RGB\n{frame.token}")
    return similarity_png, features_png, example_scan


def _save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically."""
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


def _write_yaml(path: Path, data: dict[str, Any], comment: str) -> None:
    import yaml

    atomic_write_text(path, f"# {comment}\n" + yaml.safe_dump(data, sort_keys=False))


def _summary(r: DemoResult, plan: DemoPlan) -> str:
    out = r.output_dir
    ckpt = r.checkpoint
    delta = 100 * (r.miou_pretrained - r.miou_random)
    secs = ", ".join(f"{k} {v:.0f} s" for k, v in r.seconds.items() if k != "total")
    lines = [
        f"=== largead demo ({plan.name}) finished in {r.seconds.get('total', 0.0):.0f} s ({secs})",
        f"superpixels        {r.num_superpixel_maps} PNG maps in {r.superpixel_dir}",
        (f"checkpoint         {ckpt}  (Hub-ready: config.json, model.safetensors, README.md; {r.pretrain_steps} "
         "pretraining steps)"),
        (f"linear probe mIoU  pretrained {100 * r.miou_pretrained:.2f}%  vs  random init {100 * r.miou_random:.2f}%  "
         f"({delta:+.2f} points; {r.dataset_key} val split)"),
        f"pictures           {r.similarity_png}  (Figure 4: similarity to a query point on a car)",
        f"                   {r.features_png}  (pretrained features, PCA -> RGB)",
        f"3D view            {r.view_html}  (open in a browser; click a point: Figure 4, live)",
        "next:",
        (f"  largead embed {r.example_scan} --model {ckpt} --dataset {r.dataset_key} --out {out / 'feats.npy'} "
         f"--png {out / 'feats.png'}"),
        f"  python scripts/push_to_hub.py {ckpt} your-org/largead-synthetic --dry-run",
        f"  python -c \"from largead import LargeADEncoder; print(LargeADEncoder.from_pretrained('{ckpt}'))\"",
    ]
    if plan.name == "quick":
        lines.insert(1, "(quick mode: a few steps on a tiny world, the numbers mean nothing; run `largead demo`)")
    return "\n".join(lines)
