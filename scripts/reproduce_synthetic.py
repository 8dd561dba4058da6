"""The LargeAD paper's linear-probing claims in miniature, on the procedural synthetic world (CPU), with paired
statistics across seeds.

    python scripts/reproduce_synthetic.py --output-dir outputs/reproduce_synthetic            # run + report
    python scripts/reproduce_synthetic.py --smoke --output-dir /tmp/repro                    # every code path, tiny
    python scripts/reproduce_synthetic.py --output-dir outputs/reproduce_synthetic --report  # tables from what ran

Rows (:data:`VARIANTS`; every pretrained row has the same budget, steps x batch, and the same seeds):

==========================  ==================================================================================
``random``                  no pretraining (random initialisation), linear probe only
``slic``                    superpixel-to-superpoint distillation (``L_vfm``) with SLIC superpixels (SLidR)
``vfm-sam``                 ``L_vfm`` with the synthetic world's VFM-like superpixels at SAM granularity (fine,
                            part-level; ``synthetic-vfm``, ``granularity: sam``)
``vfm-seem``                the same at SEEM granularity (compact, semantic; ``granularity: seem``; Seal /
                            LargeAD Table 8)
``vfm-seem+tmp``            + superpoint temporal consistency ``L_tmp`` (LargeAD Table 9)
``vfm-seem+tmp+p2s``        + point-to-segment aggregation ``L_p2s``
``multi``                   + a second LiDAR (twice the beams, intensity 0-1, another part of the world) with
                            per-dataset input normalisation, same step budget, ``L_cdp`` off (LargeAD Table 11)
``multi+cdp``               the full model: + the cross-dataset term ``L_cdp``
``supervised``              upper bound: the same backbone trained with labels for the same sample budget
                            (:func:`supervised_overrides`), then the same evaluation
``multi+cdp@calN``          the full model pretrained with camera extrinsics miscalibrated by N % on both
                            sensors (``data.i.calibration_error``; LargeAD Table 10): the misalignment curve
==========================  ==================================================================================

``vfm-seem`` is the base of the ``+`` rows because Seal reports SEEM best for linear probing; this choice was fixed
before any run. Each row has a reference row (``Variant.ref``, the row it adds one thing to) and every comparison is
*paired by seed*: the pretraining seed is the probe seed, so two rows with the same seed share the initial weights,
the sample order and the probe's augmentation. For each comparison the report gives the per-seed differences, their
mean with a 95 % t confidence interval, the paired t-test p-value, the Holm-adjusted p-value over the row
comparisons, and the exact sign test (wins / losses, ties dropped).

Old and fixed objectives: ``--label`` names the library version that runs (``fixed`` by default). Running this
script with ``PYTHONPATH`` pointing at an older checkout and ``--label old`` stores those runs beside the others,
and ``--report`` puts every label found in the output folder side by side, paired by seed (see
docs/reproduce_synthetic.md for the exact commands). The script only uses library APIs that exist in both.

Protocol (miniature choices, not the paper's): the probe is the library's linear probe
(``largead.training.probe.linear_probe``: backbone frozen in eval mode, rotation/flip augmentation, CE + Lovasz) with
a short schedule and lr 0.2 without batch scaling; pretraining is ``largead.training.pretrain`` with the
``synthetic`` config adapted per row (:func:`pretrain_config`); mIoU is the standard mean over classes present
(``miou``) on held-out validation sequences. The synthetic teacher (a stand-in for a VFM, trained once on the
world's camera images and cached in ``<output-dir>/teacher_cache``) is shared by every label.

Running: every (label, row, seed) job writes ``<output-dir>/<label>/<row>/seed<k>/result.json`` when it finishes and
is skipped when that file exists, so an interrupted run resumes; a job being run is claimed with a ``.claim`` file
holding the process id, so several processes can work through the same output folder at once (a claim whose process
is gone is taken over). Finished jobs drop their checkpoints (the encoder and the probe's results stay). ``--threads``
sets torch's threads per process (default 1: on the project's shared 2-core machine one thread per process was ~5x
faster per step than two, which spin against other jobs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from largead.errors import run_cli
from largead.fileio import atomic_path, atomic_write_text
from largead.training import parse_cli


# ---------------------------------------------------------------------------------------------------------- the rows
@dataclass(frozen=True)
class Variant:
    """One row. ``source=None`` and not ``supervised``: no pretraining (random init). ``ref``: the row this one
    adds one thing to (paired comparison); ``objectives``: the row's pretraining depends on the objectives, so it is
    run for every library version compared (``--label``)."""

    title: str
    source: str | None = None
    granularity: str | None = None
    tmp: bool = False
    p2s: bool = False
    multi: bool = False
    cdp: bool = False
    calibration_error: float = 0.0
    supervised: bool = False
    ref: str | None = None
    objectives: bool = True


_FULL = {"source": "synthetic-vfm", "granularity": "seem", "tmp": True, "p2s": True, "multi": True, "cdp": True}
VARIANTS: dict[str, Variant] = {
    "random": Variant("random init", objectives=False),
    "slic": Variant("SLIC superpixels (L_vfm)", "slic", ref="random"),
    "vfm-sam": Variant("VFM-like superpixels, SAM granularity (fine)", "synthetic-vfm", "sam", ref="slic"),
    "vfm-seem": Variant("VFM-like superpixels, SEEM granularity (semantic)", "synthetic-vfm", "seem", ref="slic"),
    "vfm-seem+tmp": Variant("+ temporal consistency (L_tmp)", "synthetic-vfm", "seem", tmp=True, ref="vfm-seem"),
    "vfm-seem+tmp+p2s": Variant("+ point-to-segment (L_p2s)", "synthetic-vfm", "seem", tmp=True, p2s=True,
                                ref="vfm-seem+tmp"),
    "multi": Variant("multi-source (2 sensors, per-dataset norm.), no L_cdp", "synthetic-vfm", "seem", tmp=True,
                     p2s=True, multi=True, ref="vfm-seem+tmp+p2s"),
    "multi+cdp": Variant("multi-source + L_cdp (full model)", ref="multi", **_FULL),
    "supervised": Variant("supervised upper bound (labels, same budget)", supervised=True, ref="multi+cdp",
                          objectives=False),
    **{f"multi+cdp@cal{p:02d}": Variant(f"full model, {p} % calibration error", calibration_error=p / 100,
                                        ref="multi+cdp", **_FULL) for p in (5, 10, 25, 50)},
}
MAIN_ROWS = ["random", "slic", "vfm-sam", "vfm-seem", "vfm-seem+tmp", "vfm-seem+tmp+p2s", "multi", "multi+cdp",
             "supervised"]
CALIBRATION_ROWS = ["multi+cdp", "multi+cdp@cal05", "multi+cdp@cal10", "multi+cdp@cal25", "multi+cdp@cal50"]
EXTRA_COMPARISONS = [("vfm-seem", "vfm-sam"), ("multi+cdp", "vfm-seem+tmp+p2s")]
"""Paired comparisons reported besides each row against its ``ref`` and against ``random``."""
FULL_MODEL = "multi+cdp"


@dataclass
class Budget:
    """World and schedule of one reproduction (the defaults are the committed run, docs/reproduce_synthetic.md)."""

    backbone: str = "minkunet14"
    world: dict[str, Any] = field(default_factory=lambda: {
        "num_sequences": 2, "frames_per_sequence": 4, "beams": 16, "azimuth_resolution": 3.0, "max_range": 25.0,
        "num_cameras": 2, "image_size": [48, 80]})
    second_sensor: dict[str, Any] = field(default_factory=lambda: {"beams": 32, "intensity_scale": 1.0, "seed": 1})
    val_sequences: int = 3
    pretrain_steps: int = 60
    pretrain_batch: int = 2
    probe_steps: int = 60
    probe_batch: int = 2
    probe_lr: float = 0.2
    supervised_lr: float = 0.125  # backbone; = the pretraining's effective lr (synthetic config: 0.25 @ 4 -> 0.125 @ 2)
    max_rows: int = 2048
    teacher: dict[str, Any] = field(default_factory=lambda: {"steps": 300, "batch_size": 8})  # trained once, cached

    def supervised_steps(self) -> int:
        """Steps of the supervised bound at ``probe_batch``: the labelled samples it sees equal the samples the
        pretrained rows see in pretraining and probing together (rounded up)."""
        samples = self.pretrain_steps * self.pretrain_batch + self.probe_steps * self.probe_batch
        return -(-samples // self.probe_batch)


SMOKE = Budget(
    world={"num_sequences": 1, "frames_per_sequence": 3, "beams": 4, "azimuth_resolution": 4.0, "max_range": 25.0,
           "num_cameras": 1, "image_size": [24, 40]},
    second_sensor={"beams": 8, "intensity_scale": 1.0, "seed": 1}, val_sequences=1,
    pretrain_steps=1, pretrain_batch=1, probe_steps=1, probe_batch=1, max_rows=256,
    teacher={"steps": 20, "batch_size": 4})


# ------------------------------------------------------------------------------------------------------- configs
def _sensor_a(b: Budget) -> dict[str, Any]:
    return {"seed": 0, **b.world}


def pretrain_config(variant: Variant, b: Budget, seed: int, root: Path | None = None,
                    label: str = "fixed") -> dict[str, Any]:
    """The ``synthetic`` pretraining config of the imported library (training/configs/synthetic.yaml) adapted to one
    row and seed; ``root``: the output folder of the run (teacher cache shared by every label, temporal segment cache
    shared by the runs of ``label``: the cache format may differ between library versions).

    Built as a whole mapping (written to the run folder) rather than ``key=value`` overrides, because overrides
    merge into the base mapping and cannot remove a key (e.g. the SEEM granularity option for SLIC). Only keys that
    exist in the library before and after the objective fixes are set; the rest comes from the library's own config.
    """
    from largead.config import load_yaml
    from largead.training.pretrain import resolve_config_path

    if variant.source is None:
        raise ValueError(f"row {variant.title!r} has no pretraining")
    cfg = load_yaml(resolve_config_path("synthetic"))
    sources = [{"name": "synthetic", "split": "train", "label": "synthetic", "options": _sensor_a(b)}]
    if variant.multi:
        sources.append({"name": "synthetic", "split": "train", "label": "synthetic-64",
                        "options": {**_sensor_a(b), **b.second_sensor}})
    if variant.calibration_error:
        for s in sources:
            s["calibration_error"] = float(variant.calibration_error)
    cfg["name"] = f"reproduce-synthetic-{'multi' if variant.multi else 'single'}"
    cfg["data"] = sources
    cfg["superpixels"] = {"source": variant.source,
                          "options": {"granularity": variant.granularity} if variant.granularity else {}}
    teacher = dict(b.teacher)
    if root is not None:
        teacher["cache_dir"] = str(Path(root).resolve() / "teacher_cache")
    cfg["teacher"] = {"name": "synthetic", "options": teacher}
    if root is not None:
        cfg["segment_cache"] = str(Path(root).resolve() / label / "segment_cache")
    cfg["model"] = {**cfg.get("model", {}), "backbone": b.backbone}
    cfg["objective"] = {**cfg.get("objective", {}), "max_rows": b.max_rows, "weights": {
        "vfm": 1.0, "tmp": 1.0 if variant.tmp else 0.0, "p2s": 1.0 if variant.p2s else 0.0,
        "cdp": 1.0 if variant.cdp else 0.0}}
    cfg["pipeline"] = {**cfg.get("pipeline", {}), "temporal": bool(variant.tmp or variant.p2s)}
    cfg["train"] = {**cfg.get("train", {}), "steps": b.pretrain_steps, "batch_size": b.pretrain_batch,
                    "seed": seed, "checkpoint_every": 0, "log_with": None}
    cfg["norm_frames"] = 2
    return cfg


def probe_overrides(b: Budget) -> list[str]:
    """Fine-tuning config edits of the miniature linear probe (same for every row)."""
    return [f"model.backbone={b.backbone}", f"batch_size={b.probe_batch}", "epochs=1000", f"max_steps={b.probe_steps}",
            f"optim.lr={b.probe_lr}", "optim.scale_lr=false", f"checkpointing_steps={b.probe_steps}"]


def supervised_overrides(b: Budget) -> list[str]:
    """The supervised upper bound: ``finetune-synthetic`` (SLidR's fine-tuning protocol: all parameters trained,
    CE + Lovasz, rotation/flip augmentation, BatchNorm momentum 0.02, SGD with cosine schedule) from random init on
    the probe's labelled frames, for :meth:`Budget.supervised_steps` steps at the probe's batch; backbone lr = the
    pretraining's effective lr, classifier lr = the probe's lr, no batch scaling (fixed before any run)."""
    steps = b.supervised_steps()
    return [f"model.backbone={b.backbone}", f"batch_size={b.probe_batch}", "epochs=100000", f"max_steps={steps}",
            f"optim.lr={b.supervised_lr}", "optim.scale_lr=false", f"head_lr={b.probe_lr}",
            f"checkpointing_steps={steps}"]


def _probe_world(b: Budget, **extra: Any) -> dict[str, Any]:
    return {**_sensor_a(b), "num_cameras": 1, "image_size": [8, 8], **extra}  # cameras are not used by the probe


# ---------------------------------------------------------------------------------------------------------- jobs
def _library_version() -> dict[str, Any]:
    """Where the imported ``largead`` lives and its git commit (provenance of a label's numbers)."""
    import largead

    where = Path(largead.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"path": str(where), "commit": commit}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(run: Path) -> bool:
    """Take the job in ``run`` for this process (``run/.claim`` created exclusively, holding the pid); ``False``
    when a live process holds it. A claim whose process is gone is taken over."""
    run.mkdir(parents=True, exist_ok=True)
    path = run / ".claim"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid and (pid == os.getpid() or _pid_alive(pid)):
                return pid == os.getpid()
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return True
    return False


def _prune(run: Path) -> None:
    """Drop what a finished job no longer needs (optimiser checkpoints, the probe's model); keep the encoder."""
    for sub in ("pretrain/checkpoints", "probe/checkpoints", "probe/model", "supervised/checkpoints"):
        shutil.rmtree(run / sub, ignore_errors=True)


def run_one(name: str, seed: int, b: Budget, root: Path, label: str = "fixed") -> dict[str, Any]:
    """Pretrain (unless ``random``/``supervised``), probe and evaluate one row for one seed under ``label``, or read
    its ``result.json`` when it has finished before; returns mIoU, timings and provenance."""
    from largead.evaluation.report import write_results

    variant = VARIANTS[name]
    run = root / label / name / f"seed{seed}"
    done = run / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    t0, load0 = time.time(), os.getloadavg()
    if variant.supervised:
        t1, result = t0, supervised(run, seed, b)
    else:
        encoder = None
        if variant.source is not None:
            import yaml

            from largead.training import pretrain

            cfg_path = run / "pretrain-config.yaml"
            atomic_write_text(cfg_path, yaml.safe_dump(pretrain_config(variant, b, seed, root, label), sort_keys=False))
            res = pretrain.main(pretrain.parse_args(["--config", str(cfg_path), "--output-dir", str(run / "pretrain")]))
            encoder = res["encoder_dir"]
        t1 = time.time()
        from largead.training.probe import linear_probe

        result = linear_probe(encoder, run / "probe", dataset="synthetic", train_options=_probe_world(b),
                              val_options=_probe_world(b, num_sequences=b.val_sequences), seed=seed,
                              overrides=probe_overrides(b), results_path=run / "eval.json", update_card=False)
    t2 = time.time()
    row = {"label": label, "variant": name, "seed": seed, "miou": result["miou"], "miou_slidr": result["miou_slidr"],
           "accuracy": result["accuracy"], "pretrain_s": t1 - t0, "probe_s": t2 - t1, "start": t0, "end": t2,
           "loadavg_start": load0[0], "loadavg_end": os.getloadavg()[0], "budget": asdict(b),
           "library": _library_version()}
    write_results(done, row)
    _prune(run)
    return row


def supervised(run: Path, seed: int, b: Budget) -> dict[str, Any]:
    """Train the supervised bound (:func:`supervised_overrides`) and evaluate it like the probes."""
    from largead.config import format_override
    from largead.training import evaluate, finetune

    argv = ["--config", "finetune-synthetic", "--output-dir", str(run / "supervised"), "--mode", "finetune",
            "--dataset", "synthetic", "--pretrained", "none", "--seed", str(seed),
            f"data.options={format_override(_probe_world(b))}", *supervised_overrides(b)]
    model_dir = finetune.main(finetune.parse_args(argv))
    ev = ["--model", str(model_dir), "--dataset", "synthetic", "--split", "val", "--output", str(run / "eval.json"),
          "--no-card"]
    for key, value in _probe_world(b, num_sequences=b.val_sequences).items():
        ev += ["--option", f"{key}={format_override(value)}"]
    return evaluate.main(evaluate.parse_args(ev))


def jobs(variants: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, int]]:
    """Seed-major order, so an interrupted run leaves complete paired sets of the first seeds."""
    return [(name, seed) for seed in seeds for name in variants]


# ---------------------------------------------------------------------------------------------------- statistics
def paired(a: Mapping[int, float], b: Mapping[int, float]) -> dict[str, Any] | None:
    """Paired comparison of ``a - b`` over the seeds both have: per-seed differences, mean, sample std, 95 % t
    confidence interval of the mean, two-sided paired t-test p (nan for < 2 seeds or zero spread), exact two-sided
    sign test (ties dropped). ``None`` when no seed is shared."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    d = np.array([a[s] - b[s] for s in seeds], dtype=np.float64)
    n = len(d)
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    if n > 1 and sd > 0:
        half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
        p = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    else:
        half, p = math.nan, math.nan
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    sign_p = float(stats.binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else math.nan
    return {"seeds": seeds, "diffs": d.tolist(), "n": n, "mean": mean, "sd": sd, "ci_low": mean - half,
            "ci_high": mean + half, "p_t": p, "wins": wins, "losses": losses, "p_sign": sign_p}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (nan stays nan and is not counted)."""
    p = np.asarray(pvalues, dtype=np.float64)
    ok = np.flatnonzero(~np.isnan(p))
    out = np.full(len(p), math.nan)
    order = ok[np.argsort(p[ok], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):  # cumulative max over the sorted p-values (a handful of comparisons)
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def summarise(rows: Sequence[dict[str, Any]], order: Sequence[str], label: str | None = None) -> list[dict[str, Any]]:
    """Mean, sample std (ddof 1; nan for one seed), min, max and per-seed mIoU of each row of ``label`` (all rows
    when ``None``), in ``order``; rows without runs are left out."""
    out = []
    for name in order:
        got = sorted((r["seed"], r["miou"]) for r in rows if r["variant"] == name
                     and (label is None or r.get("label", "fixed") == label))
        if not got:
            continue
        vals = np.array([v for _, v in got], dtype=np.float64)
        out.append({"variant": name, "n": int(vals.size), "mean": float(vals.mean()),
                    "std": float(vals.std(ddof=1)) if vals.size > 1 else math.nan, "min": float(vals.min()),
                    "max": float(vals.max()), "values": vals.tolist(), "seeds": [s for s, _ in got]})
    return out


def by_seed(rows: Sequence[dict[str, Any]], label: str, name: str) -> dict[int, float]:
    """``{seed: mIoU}`` of row ``name`` under ``label``. Rows that do not depend on the objectives (``random``,
    ``supervised``) are shared: a label that did not run them uses another label's runs (``fixed`` first)."""
    got = {r["seed"]: r["miou"] for r in rows if r.get("label", "fixed") == label and r["variant"] == name}
    if got or VARIANTS[name].objectives:
        return got
    for other in sorted({r.get("label", "fixed") for r in rows}, key=lambda s: (s != "fixed", s)):
        got = {r["seed"]: r["miou"] for r in rows if r.get("label", "fixed") == other and r["variant"] == name}
        if got:
            return got
    return {}


def comparisons(rows: Sequence[dict[str, Any]], label: str = "fixed") -> list[dict[str, Any]]:
    """The paired comparisons of one label: each main row against its ``ref`` and against ``random``, the
    :data:`EXTRA_COMPARISONS`, each calibration level against 0 %; Holm-adjusted over the first group (row vs ref)."""
    out: list[dict[str, Any]] = []
    for kind, pairs in (
            ("ref", [(n, VARIANTS[n].ref) for n in MAIN_ROWS if VARIANTS[n].ref]),
            ("random", [(n, "random") for n in MAIN_ROWS if n != "random" and VARIANTS[n].ref != "random"]),
            ("extra", EXTRA_COMPARISONS),
            ("calibration", [(n, FULL_MODEL) for n in CALIBRATION_ROWS[1:]])):
        for a, b in pairs:
            res = paired(by_seed(rows, label, a), by_seed(rows, label, b))
            if res is not None:
                out.append({"kind": kind, "a": a, "b": b, **res})
    refs = [c for c in out if c["kind"] == "ref"]
    for c, adj in zip(refs, holm([c["p_t"] for c in refs])):
        c["p_holm"] = adj
    return out


def label_comparisons(rows: Sequence[dict[str, Any]], new: str = "fixed", old: str = "old") -> list[dict[str, Any]]:
    """``new`` minus ``old`` per row, paired by seed (the rows both labels ran)."""
    out = []
    for name in (n for n, v in VARIANTS.items() if v.objectives):
        res = paired(by_seed(rows, new, name), by_seed(rows, old, name))
        if res is not None:
            out.append({"kind": "label", "a": name, "b": name, **res})
    return out


# -------------------------------------------------------------------------------------------------------- report
def _pct(v: float, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{100 * v:+.2f}" if signed else f"{100 * v:.2f}"


def _p(v: float | None) -> str:
    if v is None or math.isnan(v):
        return "n/a"
    return f"{v:.3f}" if v >= 0.001 else f"{v:.1e}"


def _diff_cell(c: dict[str, Any] | None) -> str:
    if c is None:
        return ""
    ci = "" if math.isnan(c["ci_low"]) else f" [{_pct(c['ci_low'], True)}, {_pct(c['ci_high'], True)}]"
    return f"{_pct(c['mean'], True)}{ci}"


def markdown_table(summary: Sequence[dict[str, Any]], budget: Budget, seconds: float) -> str:
    """Per-row mean ± std, per-seed values and the difference of means to ``random`` (one label)."""
    lines = ["| Pretraining | LP mIoU % (mean ± std) | per seed | Δ vs random |", "|---|---|---|---|"]
    ref = next((s["mean"] for s in summary if s["variant"] == "random"), None)
    for s in summary:
        delta = "" if ref is None or s["variant"] == "random" else _pct(s["mean"] - ref, True)
        seeds = " / ".join(_pct(v) for v in s["values"])
        lines.append(f"| {s['variant']} | {_pct(s['mean'])} ± {_pct(s['std'])} | {seeds} | {delta} |")
    lines += ["", budget_line(budget, summary[0]["n"] if summary else 0, seconds)]
    return "\n".join(lines) + "\n"


def budget_line(b: Budget, n_seeds: int, seconds: float) -> str:
    return (f"Backbone {b.backbone}; pretraining {b.pretrain_steps} steps x batch {b.pretrain_batch}; linear probe "
            f"{b.probe_steps} steps x batch {b.probe_batch} (lr {b.probe_lr}); supervised bound "
            f"{b.supervised_steps()} steps x batch {b.probe_batch}; world {json.dumps(b.world)}, second sensor "
            f"{json.dumps(b.second_sensor)}, {b.val_sequences} validation sequences; {n_seeds} seeds; "
            f"{seconds / 60:.1f} min of job time.")


def comparison_table(comps: Sequence[dict[str, Any]]) -> str:
    """Markdown table of paired comparisons (a - b)."""
    lines = ["| comparison | seeds | per-seed Δ (pp) | mean Δ [95 % CI] (pp) | paired t p | Holm p | sign test |",
             "|---|---|---|---|---|---|---|"]
    for c in comps:
        what = f"{c['a']} − {c['b']}" if c["kind"] != "label" else c["a"]
        diffs = " / ".join(_pct(d, True) for d in c["diffs"])
        lines.append(f"| {what} | {c['n']} | {diffs} | {_diff_cell(c)} | {_p(c['p_t'])} | {_p(c.get('p_holm'))} | "
                     f"{c['wins']}+ / {c['losses']}− (p {_p(c['p_sign'])}) |")
    return "\n".join(lines) + "\n"


def main_table(rows: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    """The rows with every label side by side: mean ± std per label, the paired Δ to the reference row, and
    (with two labels) the paired difference between them."""
    head = ["row", "reference"]
    for lab in labels:
        head += [f"{lab}: LP mIoU % (mean ± std)", f"{lab}: Δ vs reference (pp) [95 % CI]"]
    if len(labels) == 2:
        head += [f"{labels[0]} − {labels[1]} (pp) [95 % CI]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in [*MAIN_ROWS, *CALIBRATION_ROWS[1:]]:
        v = VARIANTS[name]
        cells = [f"{name}: {v.title}", v.ref or ""]
        any_run = False
        for lab in labels:
            vals = by_seed(rows, lab, name)
            if not vals:
                cells += ["", ""]
                continue
            any_run = True
            arr = np.array(list(vals.values()))
            std = _pct(float(arr.std(ddof=1))) if len(arr) > 1 else "n/a"
            cells += [f"{_pct(float(arr.mean()))} ± {std} (n={len(arr)})",
                      _diff_cell(paired(vals, by_seed(rows, lab, v.ref))) if v.ref else ""]
        if len(labels) == 2:
            cells.append(_diff_cell(paired(by_seed(rows, labels[0], name), by_seed(rows, labels[1], name))))
        if any_run:
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(rows: Sequence[dict[str, Any]], labels: Sequence[str], path: Path) -> None:
    """Mean LP mIoU per row and label (bars, ± std), the seeds as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in MAIN_ROWS if any(by_seed(rows, lab, n) for lab in labels)]
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=120)
    x = np.arange(len(names))
    width = 0.8 / max(len(labels), 1)
    colors = ["#4C72B0", "#DD8452", "#55A868", "#C44E52"]
    for k, lab in enumerate(labels):
        legend = lab
        for i, n in enumerate(names):
            vals = np.array(list(by_seed(rows, lab, n).values())) * 100
            if vals.size == 0:
                continue
            xi = x[i] + (k - (len(labels) - 1) / 2) * width
            std = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
            ax.bar(xi, vals.mean(), width * 0.95, yerr=std, capsize=3, color=colors[k % 4], alpha=0.85, label=legend)
            legend = None  # one legend entry per label
            ax.scatter(np.full(vals.size, xi), vals, color="k", s=8, zorder=3)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("linear-probe mIoU (%)")
    ax.set_title("LargeAD in miniature (synthetic world): bars mean ± std, dots seeds")
    if len(labels) > 1:
        ax.legend(title="objectives")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def calibration_chart(rows: Sequence[dict[str, Any]], label: str, path: Path) -> bool:
    """LP mIoU of the full model against the calibration error (mean with 95 % t interval, seeds as dots);
    ``False`` (nothing written) without runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    pts = [(VARIANTS[n].calibration_error * 100, np.array(list(by_seed(rows, label, n).values())) * 100)
           for n in CALIBRATION_ROWS]
    pts = [(e, v) for e, v in pts if v.size]
    if not pts:
        return False
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    xs = [e for e, _ in pts]
    means = [v.mean() for _, v in pts]
    half = [stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size) if v.size > 1 else 0.0
            for _, v in pts]
    ax.errorbar(xs, means, yerr=half, marker="o", capsize=4, color="#4C72B0", label="mean, 95 % CI")
    for e, v in pts:
        ax.scatter(np.full(v.size, e), v, color="k", s=8, zorder=3)
    ax.set_xlabel("camera calibration error (%: x 10° rotation, x 0.5 m translation)")
    ax.set_ylabel("linear-probe mIoU (%)")
    ax.set_title("Full model under calibration misalignment")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return True


def similarity_figures(root: Path, b: Budget, label: str = "fixed",
                       wanted: Sequence[str] = ("car", "pedestrian")) -> list[Path]:
    """The paper's Figure 4 from the full model (lowest seed of ``label``): cosine similarity of every point's
    feature to a query point on the largest object of each class in ``wanted`` (first validation scan that has one),
    beside the random-init encoder it started from. Writes ``figure4_<class>.png`` into ``root``."""
    import torch

    from largead import LargeADEncoder
    from largead.data import get_dataset
    from largead.viz import frame_with_query, save_similarity_figure

    runs = sorted((root / label / FULL_MODEL).glob("seed*/pretrain/encoder"))
    if not runs:
        return []
    enc_dir = runs[0]
    seed = int(enc_dir.parent.parent.name.removeprefix("seed"))
    encoder = LargeADEncoder.from_pretrained(str(enc_dir)).eval()
    torch.manual_seed(seed)  # the weights pretraining started from (training/pretrain.py seeds before building)
    initial = LargeADEncoder(encoder.config).eval()
    dataset = get_dataset("synthetic", None, "val", **_probe_world(b, num_sequences=b.val_sequences))
    names = list(dataset.class_names)
    out = []
    for cls in wanted:
        try:
            _, frame, query = frame_with_query(dataset, names, wanted=(cls,))
        except ValueError as err:
            print(f"reproduce_synthetic.py: no Figure 4 for {cls}: {err}")
            continue
        points = np.ascontiguousarray(frame.points[:, :4], dtype=np.float32)
        with torch.no_grad():
            f_full = encoder.embed(torch.from_numpy(points), dataset="synthetic").numpy()
            f_init = initial.embed(torch.from_numpy(points), dataset="synthetic").numpy()
        reach = float(np.percentile(np.abs(points[:, :2]), 98))
        extent = float(np.clip(np.abs(points[query, :2]).max() + 10.0, 15.0, max(reach, 15.0)))
        size = float(np.clip(2.0e4 / max(len(points), 1) * (20.0 / extent) ** 2, 1.0, 12.0))
        out.append(save_similarity_figure(
            points, [("random init", f_init), (f"full model ({b.pretrain_steps} steps, seed {seed})", f_full)],
            query, root / f"figure4_{cls}.png", extent=extent, labels=frame.labels, class_names=names,
            point_size=size))
    return out


def collect(root: Path) -> list[dict[str, Any]]:
    """Every finished job's result under ``root`` (any label)."""
    return [json.loads(p.read_text()) for p in sorted(root.glob("*/*/seed*/result.json"))]


def report(root: Path, b: Budget, figures: bool = True) -> dict[str, Any]:
    """Tables, charts and pictures from the finished jobs in ``root``: ``results.json`` (every run and comparison),
    ``results.md``, ``reproduce_synthetic.png``, ``reproduce_synthetic_calibration.png``, ``figure4_*.png``."""
    from largead.evaluation.report import write_results

    rows = collect(root)
    labels = sorted({r["label"] for r in rows}, key=lambda s: (s != "fixed", s))
    comps = {lab: comparisons(rows, lab) for lab in labels}
    versus = label_comparisons(rows, labels[0], labels[1]) if len(labels) == 2 else []
    job_s = sum(r["pretrain_s"] + r["probe_s"] for r in rows)
    span = (max(r["end"] for r in rows) - min(r["start"] for r in rows)) if rows else 0.0
    loads = [v for r in rows for v in (r["loadavg_start"], r["loadavg_end"])]
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        import torch

        machine["torch"] = torch.__version__
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    md = ["# LargeAD in miniature: linear probing on the synthetic world", "",
          budget_line(b, len({r["seed"] for r in rows}), job_s), "",
          f"Wall time from the first job's start to the last job's end: {span / 3600:.2f} h; sum of job times "
          f"{job_s / 3600:.2f} h. Load average (1 min) at job starts and ends: median "
          f"{np.median(loads) if loads else math.nan:.1f}, max {max(loads) if loads else math.nan:.1f}, on "
          f"{machine['cpus']} CPUs ({machine['platform']}).", "",
          "## Rows", "", main_table(rows, labels)]
    for lab in labels:
        md += [f"## Paired comparisons ({lab})", "", comparison_table(comps[lab])]
    if versus:
        md += [f"## {labels[0]} − {labels[1]} per row, paired by seed", "", comparison_table(versus)]
    for lab in labels:
        md += [f"## Per-seed LP mIoU % ({lab})", "", markdown_table(summarise(rows, list(VARIANTS), lab), b, job_s)]
    atomic_write_text(root / "results.md", "\n".join(md))
    pictures: list[str] = []
    if rows:
        bar_chart(rows, labels, root / "reproduce_synthetic.png")
        pictures.append(str(root / "reproduce_synthetic.png"))
        if "fixed" in labels and calibration_chart(rows, "fixed", root / "reproduce_synthetic_calibration.png"):
            pictures.append(str(root / "reproduce_synthetic_calibration.png"))
        if figures and "fixed" in labels:
            pictures += [str(p) for p in similarity_figures(root, b)]
    results = {"budget": asdict(b), "labels": labels, "runs": rows, "comparisons": comps, "label_comparisons": versus,
               "job_seconds": job_s, "wall_seconds": span, "machine": machine, "pictures": pictures}
    write_results(root / "results.json", results)
    return results


# ---------------------------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="reproduce_synthetic.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", default="outputs/reproduce_synthetic")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--label", default="fixed",
                   help="name of the library version being run (e.g. 'old' with PYTHONPATH at an older checkout)")
    p.add_argument("--smoke", action="store_true", help="tiny world and 1-step schedules (tests every code path)")
    p.add_argument("--report", action="store_true", help="only build the report from the finished jobs")
    p.add_argument("--no-report", action="store_true", help="run the jobs, leave the report to a later --report")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--backbone", default=None, help="override the budget's backbone (e.g. minkunet34)")
    p.add_argument("--pretrain-steps", type=int, default=None)
    p.add_argument("--probe-steps", type=int, default=None)
    p.add_argument("--beams", type=int, default=None, help="beams of the probed sensor (the second gets twice as many)")
    return parse_cli(p, argv)


def budget_from_args(args: argparse.Namespace) -> Budget:
    budget = SMOKE if args.smoke else Budget()
    for key in ("backbone", "pretrain_steps", "probe_steps"):
        if getattr(args, key) is not None:
            budget = replace(budget, **{key: getattr(args, key)})
    if args.beams is not None:
        budget = replace(budget, world={**budget.world, "beams": args.beams},
                         second_sensor={**budget.second_sensor, "beams": 2 * args.beams})
    return budget


def main(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    budget = budget_from_args(args)
    root = Path(args.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    ran = []
    if not args.report:
        for name, seed in jobs(args.variants, args.seeds):
            run = root / args.label / name / f"seed{seed}"
            if (run / "result.json").is_file():
                continue
            if not claim(run):
                print(f"reproduce_synthetic.py: {args.label}/{name}/seed{seed} is being run by another process")
                continue
            try:
                row = run_one(name, seed, budget, root, args.label)
            finally:
                (run / ".claim").unlink(missing_ok=True)
            ran.append(row)
            print(f"reproduce_synthetic.py: {args.label}/{name}/seed{seed}: LP mIoU {100 * row['miou']:.2f} % "
                  f"({row['pretrain_s'] + row['probe_s']:.0f} s)", flush=True)
    if args.no_report:
        return {"ran": ran}
    results = report(root, budget)
    print((root / "results.md").read_text())
    return {**results, "ran": ran}


if __name__ == "__main__":
    run_cli("reproduce_synthetic.py", lambda: main(parse_args()))
