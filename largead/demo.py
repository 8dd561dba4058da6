"""``largead demo``: the main job, end to end on the synthetic world, in minutes on a laptop CPU.

1. **Superpixels.** ``scripts/generate_superpixels.py`` runs the pretraining config's superpixel source
   (``synthetic-vfm`` at SEEM granularity: SEEM-like segments of the synthetic cameras) over every camera image of
   the pretraining data and writes the maps as PNGs in the official layout,
   ``<output_dir>/superpixels/superpixels_<tag>/<camera token>.png`` (+ ``_manifest.json``).
2. **Pretraining.** ``training/pretrain.py`` (``main(args)``) runs ``training/configs/synthetic.yaml`` (quick mode:
   ``synthetic-tiny.yaml``), reading the superpixels from those PNGs as it would read SEEM's (the config is copied
   to ``<output_dir>/configs/pretrain.yaml`` with its superpixel source replaced by ``precomputed``). The result is a
   Hub-ready folder (``config.json``, ``model.safetensors``, ``README.md`` model card).
3. **Linear probe.** ``training/finetune.py`` in ``linear_probe`` mode trains a classifier on the frozen pretrained
   encoder and, as the baseline, on the same architecture at random initialisation, on labelled frames of the
   synthetic world seen by the same LiDAR; ``training/evaluate.py`` measures both per point on the validation split.
   The pretrained encoder's mIoU goes into its card's ``model-index``; the card also gets a table of both numbers.
4. **Pictures.** The paper's Figure 4 on a validation scan (cosine similarity of every point's feature to a query
   point on a car, random init vs pretrained, next to the ground truth) and a bird's-eye view of the pretrained
   features (first three principal components as RGB).

The training scripts live in the repository's ``training/`` folder, next to the ``largead`` package, not inside it:
the demo needs a source checkout and says so (:class:`SourceCheckoutError`) when run from a wheel. It loads each
script from its file and calls its ``main(args)`` with arguments built by the script's own ``parse_args``.

Every step is seeded (the sparse engine's scatter-adds may still differ in the last bits between runs). Re-running
into the same folder resumes: finished training runs are not repeated (their scripts resume from their last
checkpoint); a folder holding a run with other settings is refused with a message (use another ``--output-dir``).
On a busy machine, ``OMP_NUM_THREADS=1`` avoids oversubscribing the cores (much faster there).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from largead.fileio import atomic_path, atomic_write_text

__all__ = ["FULL", "QUICK", "DemoPlan", "DemoResult", "SourceCheckoutError", "find_query_point", "load_training_script",
           "run_demo", "save_pictures", "training_dir"]

CARD_SECTION = "## Linear probe on the synthetic world (`largead demo`)"


class SourceCheckoutError(FileNotFoundError):
    """The demo runs the scripts of the repository's ``training/`` folder, which an installed wheel does not have."""


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
    dataset_key: str
    seconds: dict[str, float] = field(default_factory=dict)
    summary: str = ""


# ------------------------------------------------------------------------------------------- the training scripts


def training_dir() -> Path:
    """The repository's ``training/`` folder, next to the ``largead`` package of a source checkout."""
    import largead

    return Path(largead.__file__).resolve().parents[1] / "training"


def _required(folder: Path) -> list[Path]:
    """What the demo runs: the training scripts and configs, and ``scripts/generate_superpixels.py`` beside them."""
    return [folder / "pretrain.py", folder / "finetune.py", folder / "evaluate.py", folder / "configs",
            folder.parent / "scripts" / "generate_superpixels.py"]


def _check_checkout(folder: Path) -> None:
    missing = [p for p in _required(folder) if not p.exists()]
    if missing:
        names = ", ".join(str(p.relative_to(folder.parent)) for p in missing)
        from largead.models.encoder import REPO_URL

        raise SourceCheckoutError(
            f"`largead demo` needs a source checkout of largead: it runs the scripts of the repository's training/ "
            f"and scripts/ folders, which the installed package does not ship (missing under {folder.parent}: "
            f"{names}). Get the repository (git clone {REPO_URL}), then inside it run `make demo` "
            "(or `pip install -e .` followed by `largead demo`).")


def load_training_script(name: str, folder: Path | None = None) -> ModuleType:
    """Import ``training/<name>.py`` (or ``scripts/<name>.py``) of the source checkout from its file, registered as
    ``largead_training_<name>`` in ``sys.modules`` (which its dataclass configs need); later calls return the same
    module. ``folder``: the ``training/`` folder (default :func:`training_dir`)."""
    folder = training_dir() if folder is None else folder
    _check_checkout(folder)
    path = folder / f"{name}.py"
    if not path.is_file():
        path = folder.parent / "scripts" / f"{name}.py"
    module_name = f"largead_training_{name}"
    loaded = sys.modules.get(module_name)
    if loaded is not None and Path(getattr(loaded, "__file__", "")).resolve() == path.resolve():
        return loaded
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise SourceCheckoutError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    for attr in ("main", "parse_args"):
        if not callable(getattr(module, attr, None)):
            raise SourceCheckoutError(f"{path} has no {attr}(); the checkout's scripts do not match this "
                                      f"largead ({_version()})")
    return module


def _version() -> str:
    from largead import __version__

    return __version__


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


def find_query_point(labels: np.ndarray, instances: np.ndarray | None, points: np.ndarray, class_id: int,
                     min_points: int = 10) -> int | None:
    """Index of a query point on the largest object of class ``class_id`` (most points; at least ``min_points``):
    its point nearest to the object's median position. ``None`` when no such object exists."""
    on = np.flatnonzero(labels == class_id)
    if len(on) < min_points:
        return None
    inst = np.zeros(len(on), np.int64) if instances is None else np.asarray(instances)[on].astype(np.int64)
    _, inv, counts = np.unique(inst, return_inverse=True, return_counts=True)
    best = int(np.argmax(counts))
    if counts[best] < min_points:
        return None
    members = on[inv == best]
    centre = np.median(points[members, :3], axis=0)
    return int(members[np.argmin(np.linalg.norm(points[members, :3] - centre, axis=1))])


def _write_card_section(folder: Path, rows: list[tuple[str, float]], setting: str, note: str = "") -> Path:
    """Append (or replace) the demo's table of linear-probe mIoUs (``rows``: name, mIoU fraction) in
    ``folder/README.md``'s text, after the ``setting`` sentence; ``note`` follows the table."""
    from huggingface_hub import ModelCard

    path = folder / "README.md"
    card = ModelCard.load(path)
    text = card.text.split(CARD_SECTION)[0].rstrip()
    table = "\n".join(f"| {name} | {100 * miou:.2f} |" for name, miou in rows)
    card.text = f"{text}\n\n{CARD_SECTION}\n\n{setting}\n\n| encoder | mIoU (%) |\n|---|---|\n{table}\n\n{note}\n"
    return atomic_write_text(path, str(card))


def _dataset_label(dataset_name: str, split: str, options: dict[str, Any]) -> str:
    return f"{dataset_name} {split} ({', '.join(f'{k}={v}' for k, v in options.items())})"


# ----------------------------------------------------------------------------------------------------- the demo


def run_demo(output_dir: Path | str = Path("outputs/demo"), quick: bool = False,
             plan: DemoPlan | None = None, log: Callable[[str], None] = print) -> DemoResult:
    """Run the four steps (see the module docstring) into ``output_dir``; print progress and a summary.

    ``quick`` picks :data:`QUICK` (seconds; for checking an installation and for tests) instead of :data:`FULL`;
    ``plan`` overrides both. Returns a :class:`DemoResult` (also written to ``output_dir/demo_results.json``;
    the summary to ``output_dir/summary.txt``). Raises :class:`SourceCheckoutError` outside a source checkout.
    """
    from largead.trainer import ConfigMismatchError, format_override, load_yaml, write_json_atomic

    plan = plan or (QUICK if quick else FULL)
    folder = training_dir()
    _check_checkout(folder)
    pretrain = load_training_script("pretrain", folder)
    finetune = load_training_script("finetune", folder)
    evaluate = load_training_script("evaluate", folder)
    generate = load_training_script("generate_superpixels", folder)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    clock = _Clock()
    log(f"largead demo ({plan.name}) -> {out}")

    # ---- 1. superpixels of the pretraining data, as PNGs
    from largead.data import get_dataset
    from largead.superpixels import get_source

    config_path = pretrain.resolve_config_path(plan.pretrain_config)
    cfg = pretrain.load_pretrain_config(str(config_path), plan.pretrain_overrides)
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
    sp_dir = sp_root / f"superpixels_{tag}"
    maps = sorted(sp_dir.glob("**/*.png"))
    log(f"{len(maps)} superpixel maps in {sp_dir} ({clock.lap('superpixels'):.1f} s)")

    # ---- 2. pretraining on those superpixels
    log(f"\n[2/4] pretraining: training/pretrain.py --config {config_path.name}, superpixels read from the PNGs")
    raw = load_yaml(config_path)
    raw["superpixels"] = {"source": "precomputed", "options": {"root": str(sp_root.resolve()), "kind": tag}}
    for d in raw.get("data", []):
        d.pop("superpixels", None)
    derived = out / "configs" / "pretrain.yaml"
    _write_yaml(derived, raw, f"training/configs/{config_path.name} as run by `largead demo` ({plan.name}): "
                              f"superpixels read from the PNGs of step 1")
    argv = ["--config", str(derived), "--output_dir", str(out / "pretrain"), *plan.pretrain_overrides]
    if plan.pretrain_max_steps is not None:
        argv += ["--max_steps", str(plan.pretrain_max_steps)]
    try:
        run = pretrain.main(pretrain.parse_args(argv))
    except ConfigMismatchError as err:
        raise ConfigMismatchError(f"{out} holds an earlier demo run made with other settings (another mode, or an "
                                  f"edited config): remove it or pass another --output-dir. Details: {err}") from None
    checkpoint = Path(run["encoder_dir"])
    log(f"pretrained {run['steps']} steps -> {checkpoint} ({clock.lap('pretraining'):.1f} s)")

    # ---- 3. linear probe: pretrained vs random init
    data0 = cfg.data[0]
    probe_options = {**data0.options, "num_cameras": 0}
    if plan.probe_frames_per_sequence is not None:
        probe_options["frames_per_sequence"] = plan.probe_frames_per_sequence
    train_options = {**probe_options, "num_sequences": plan.probe_train_sequences}
    val_options = {**probe_options, "num_sequences": plan.probe_val_sequences}
    log(f"\n[3/4] linear probe (training/finetune.py --mode linear_probe, training/evaluate.py) on "
        f"{_dataset_label(data0.name, 'train', train_options)} -> val")
    mious: dict[str, float] = {}
    results: dict[str, dict[str, Any]] = {}
    for name, pretrained in (("pretrained", str(checkpoint.resolve())), ("random", "none")):
        ft_args = finetune.parse_args([
            "--config", "linear-probe-synthetic", "--output_dir", str(out / f"probe-{name}"),
            "--pretrained", pretrained, "--mode", "linear_probe", "--dataset", data0.name,
            f"data.options={format_override(train_options)}", f"epochs={plan.probe_epochs}",
            f"batch_size={plan.probe_batch_size}", "checkpointing_steps=1000000", *plan.probe_overrides])
        model_dir = finetune.main(ft_args)
        ev_argv = ["--model", str(model_dir), "--dataset", data0.name, "--split", "val"]
        for k, v in val_options.items():
            ev_argv += ["--option", f"{k}={format_override(v)}"]
        results[name] = evaluate.main(evaluate.parse_args(ev_argv))
        mious[name] = float(results[name]["miou"])
        log(f"{name:10s} encoder: mIoU {100 * mious[name]:.2f}% on {results[name]['num_frames']} val frames")
    from largead.evaluation.report import update_model_card

    update_model_card(checkpoint, {**results["pretrained"], "dataset_name": "largead synthetic world"})
    setting = (f"Pretrained by `largead demo` ({run['steps']} steps of `training/configs/{config_path.name}`) with "
               f"{cfg.superpixels.source} {format_override(cfg.superpixels.options)} superpixels written by "
               f"`scripts/generate_superpixels.py` and read back as PNGs. Linear probing (frozen encoder, new 1x1 "
               f"classifier; `training/finetune.py --mode linear_probe`) on {plan.probe_train_sequences} labelled "
               f"training sequence(s) of the same world and LiDAR, {plan.probe_epochs} epoch(s); per-point mIoU on "
               f"{results['pretrained']['num_frames']} validation frames (`training/evaluate.py`).")
    note = ("The synthetic teacher was trained on the synthetic world's own labels, so these numbers show that the "
            "pipeline works, not what a real vision foundation model brings (see `largead.models.image`)."
            if cfg.teacher.name == "synthetic" else "")
    _write_card_section(checkpoint, [("this checkpoint (LargeAD pretrained)", mious["pretrained"]),
                                     ("random initialisation (baseline)", mious["random"])], setting, note)
    log(f"wrote both mIoUs into {checkpoint / 'README.md'} ({clock.lap('linear probe'):.1f} s)")

    # ---- 4. pictures
    log("\n[4/4] pictures: similarity to a query point on a car (the paper's Figure 4), PCA feature view")
    val = get_dataset(data0.name, data0.root, "val", **val_options)
    similarity_png, features_png, example_scan = save_pictures(checkpoint, val, out, seed=cfg.train.seed,
                                                               dataset_key=data0.label or data0.name,
                                                               steps=int(run["steps"]))
    log(f"wrote {similarity_png} and {features_png} ({clock.lap('pictures'):.1f} s)")

    clock.total()
    result = DemoResult(output_dir=out, superpixel_dir=sp_dir, num_superpixel_maps=len(maps), checkpoint=checkpoint,
                        pretrain_steps=int(run["steps"]), miou_pretrained=mious["pretrained"],
                        miou_random=mious["random"], similarity_png=similarity_png, features_png=features_png,
                        example_scan=example_scan, dataset_key=data0.label or data0.name,
                        seconds=dict(clock.seconds))
    result.summary = _summary(result, plan)
    log("\n" + result.summary)
    (out / "summary.txt").write_text(result.summary + "\n")
    write_json_atomic(out / "demo_results.json", {
        "plan": plan.name, "checkpoint": str(checkpoint), "pretrain_steps": result.pretrain_steps,
        "miou_pretrained": result.miou_pretrained, "miou_random": result.miou_random,
        "iou_per_class": {k: results[k]["iou_per_class"] for k in results}, "class_names": list(val.class_names),
        "superpixel_maps": len(maps), "similarity_png": str(similarity_png), "features_png": str(features_png),
        "seconds": {k: round(v, 1) for k, v in clock.seconds.items()}})
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
    from largead.viz import save_feature_bev, save_similarity_figure

    class_names = list(dataset.class_names)
    frame, query = _frame_with_car(dataset, class_names)
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


def _frame_with_car(dataset: Any, class_names: list[str]) -> tuple[Any, int]:
    """The first frame of ``dataset`` with a car of >= 20 points (else >= 1; else a truck, cyclist or pedestrian),
    and the query point on it (:func:`find_query_point`)."""
    wanted = [c for c in ("car", "truck", "bicyclist", "pedestrian") if c in class_names]
    for cls in wanted:
        for min_points in (20, 1):
            for i in range(len(dataset)):  # the frames of one small validation world
                frame = dataset[i]
                q = find_query_point(frame.labels, frame.instances, frame.points, class_names.index(cls), min_points)
                if q is not None:
                    return frame, q
    raise ValueError(f"no frame of {getattr(dataset, 'name', 'the dataset')} ({len(dataset)} frames) has a point of "
                     f"class {', '.join(wanted)} to query")


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
        "next:",
        (f"  largead embed {r.example_scan} --model {ckpt} --dataset {r.dataset_key} --out {out / 'feats.npy'} "
         f"--png {out / 'feats.png'}"),
        f"  python scripts/push_to_hub.py {ckpt} your-org/largead-synthetic --dry-run",
        f"  python -c \"from largead import LargeADEncoder; print(LargeADEncoder.from_pretrained('{ckpt}'))\"",
    ]
    if plan.name == "quick":
        lines.insert(1, "(quick mode: a few steps on a tiny world, the numbers mean nothing; run `largead demo`)")
    return "\n".join(lines)
