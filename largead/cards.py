"""Model cards: one template, rendered through ``huggingface_hub.ModelCard`` for zoo entries and trained checkpoints.

The YAML metadata carries ``library_name: largead``, tags, the pretraining datasets and a ``model-index`` of results:
numbers *reported by the paper* for a zoo entry (marked with their source) and numbers *measured* by
``training/evaluate.py`` on a checkpoint (written by :func:`write_card` with ``results=``).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from largead import PAPER_URL
from largead.fileio import atomic_write_text
from largead.zoo import DATASET_LABELS, SOURCE_DESCRIPTIONS, TEACHERS, ModelInfo, PaperResult, model_info

TAGS = ["lidar", "point-cloud", "semantic-segmentation", "self-supervised-learning", "autonomous-driving",
        "minkunet", "largead", "image-to-lidar-distillation"]
DATASET_NAMES = {
    **DATASET_LABELS,
    "scribblekitti": "ScribbleKITTI", "rellis3d": "RELLIS-3D", "semanticposs": "SemanticPOSS",
    "semanticstf": "SemanticSTF", "synlidar": "SynLiDAR", "daps3d": "DAPS-3D", "synth4d": "Synth4D",
    "nuscenes_c": "nuScenes-C", "semantickitti_c": "SemanticKITTI-C", "synthetic": "largead synthetic world",
}
PROTOCOL_NAMES = {"linear_probe": "linear probing", "finetune": "fine-tuning"}


def template_path() -> Path:
    """The packaged Jinja template every card is rendered from."""
    return Path(str(resources.files("largead") / "assets" / "model_card_template.md"))


def _metric_name(protocol: str, fraction: float) -> str:
    if protocol == "linear_probe":
        return "mIoU (linear probing)"
    return f"mIoU (fine-tuning, {fraction:g}% labels)"


def eval_results(results: Iterable[PaperResult | Mapping[str, Any]], source_name: str | None = None) -> list[EvalResult]:
    """``EvalResult`` rows for the model-index: one per (dataset, protocol, fraction), metric mIoU in percent.

    ``results`` are :class:`~largead.zoo.PaperResult` rows or dicts with keys ``dataset``, ``protocol``,
    ``fraction``, ``miou`` and optionally ``split`` and ``source``.
    """
    rows = []
    for r in results:
        d = r if isinstance(r, Mapping) else {"dataset": r.dataset, "protocol": r.protocol, "fraction": r.fraction,
                                              "miou": r.miou, "source": r.source}
        for key in ("dataset", "protocol", "fraction", "miou"):
            if key not in d:
                raise KeyError(f"evaluation result {dict(d)} has no {key!r}")
        rows.append(EvalResult(
            task_type="semantic-segmentation",
            task_name="LiDAR semantic segmentation",
            dataset_type=str(d["dataset"]),
            dataset_name=DATASET_NAMES.get(str(d["dataset"]), str(d["dataset"])),
            dataset_split=str(d.get("split", "val")),
            metric_type="mean_iou",
            metric_name=_metric_name(str(d["protocol"]), float(d["fraction"])),
            metric_value=round(float(d["miou"]), 2),
            source_name=d.get("source") or source_name,
            source_url=PAPER_URL if (d.get("source") or source_name) else None,
        ))
    return rows


def _voxelisation(voxel_size: Any, cylindrical: bool) -> str:
    vs = [float(v) for v in voxel_size]
    if cylindrical:
        return f"cylindrical: rho / {vs[0]:g} m, azimuth / {vs[1]:g} deg, z / {vs[2]:g} m, floored (SLidR's grid)"
    return f"Cartesian: {vs[0]:g} x {vs[1]:g} x {vs[2]:g} m, floored"


def _results_table(results: list[PaperResult | Mapping[str, Any]], heading: str) -> str:
    if not results:
        return ""
    lines = [heading, "", "| dataset | protocol | labels | mIoU (%) | source |", "|---|---|---|---|---|"]
    for r in results:
        d = r if isinstance(r, Mapping) else r.__dict__
        proto = PROTOCOL_NAMES.get(d["protocol"], d["protocol"])
        frac = "all" if d["protocol"] == "linear_probe" else f"{float(d['fraction']):g}%"
        lines.append(f"| {DATASET_NAMES.get(d['dataset'], d['dataset'])} | {proto} | {frac} | {float(d['miou']):.2f} "
                     f"| {d.get('source', 'measured with training/evaluate.py')} |")
    return "\n".join(lines)


def render_card(
    name: str | ModelInfo | None = None,
    *,
    recipe: Mapping[str, Any] | None = None,
    results: list[Mapping[str, Any]] | None = None,
    repo_id: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> ModelCard:
    """Render a card for zoo entry ``name`` and/or a trained checkpoint.

    ``recipe`` (the training config as a dict) is printed under *Recipe*; ``results`` (measured, see
    :func:`eval_results`) go into the model-index and the *Evaluation* section; ``config`` is the encoder's
    ``LargeADConfig`` as a dict (voxelisation, channels) when there is no zoo entry.
    """
    info = model_info(name) if isinstance(name, str) else name
    cfg = info.config.to_dict() if info else dict(config or {})
    repo = repo_id or (info.name if info else "your-org/your-largead-encoder")
    paper = list(info.paper_results) if info else []
    measured = list(results or [])
    datasets = list(info.pretraining_datasets) if info else list((recipe or {}).get("datasets", []) or [])
    source = info.source if info else str((recipe or {}).get("superpixels", (recipe or {}).get("source", "custom")))
    teacher = info.teacher if info else str((recipe or {}).get("teacher", "custom"))

    index_rows = eval_results(measured) + eval_results(paper)
    data = ModelCardData(
        library_name="largead",
        license="cc-by-nc-sa-4.0",
        tags=TAGS + ([f"superpixels-{source}"] if source else []),
        datasets=datasets or None,
        pipeline_tag="feature-extraction",
        model_name=repo,
        eval_results=index_rows or None,
    )
    recipe_text = "Pretraining config (`training/pretrain.py`):\n\n```yaml\n" + _yaml(recipe) + "```" if recipe else (
        f"`accelerate launch training/pretrain.py --config {info.config_file}`" if info and info.config_file else
        "Random initialisation: no pretraining.")
    evaluation_parts = [
        _results_table(measured, "Measured on these weights (`training/evaluate.py`):"),
        _results_table(paper, "Reported by the LargeAD paper for this variant (not measured on these weights):"),
    ]
    evaluation_text = "\n\n".join(p for p in evaluation_parts if p) or (
        "No results yet: run `training/finetune.py` + `training/evaluate.py`, which write them into this card.")
    data_text = ("Pretraining used no labels: " + ", ".join(DATASET_NAMES.get(d, d) for d in datasets) +
                 ", LiDAR sweeps with their synchronised, calibrated camera images."
                 if datasets else "No pretraining data.")
    return ModelCard.from_template(
        data,
        template_path=str(template_path()),
        title=repo.split("/")[-1],
        repo_id=repo,
        description=info.description if info else f"LargeAD-pretrained LiDAR encoder `{repo}`",
        published=bool(info.published) if info else True,
        backbone=cfg.get("backbone", "minkunet34"),
        in_channels=cfg.get("in_channels", 1),
        feature_mode=cfg.get("feature_mode", "intensity"),
        feature_dim=cfg.get("out_channels", 64),
        voxelisation=_voxelisation(cfg.get("voxel_size", (0.1, 1.0, 0.1)), cfg.get("cylindrical", True)),
        source_label=SOURCE_DESCRIPTIONS.get(source, source) if source != "random" else "none (random init)",
        teacher_label=TEACHERS.get(teacher, teacher) if teacher else "none",
        data_label=" + ".join(DATASET_NAMES.get(d, d) for d in datasets) or "none",
        data_text=data_text,
        recipe_text=recipe_text,
        evaluation_text=evaluation_text,
    )


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(_plain(obj), sort_keys=False)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return _plain(asdict(obj))
    return str(obj)


def write_card(
    folder: str | os.PathLike,
    recipe: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
    results: list[Mapping[str, Any]] | None = None,
    repo_id: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> Path:
    """Render a card (see :func:`render_card`) into ``folder/README.md`` atomically and return its path.

    When ``config`` is not given and ``folder/config.json`` exists, the encoder config is read from it.
    """
    folder = Path(folder)
    if config is None and (folder / "config.json").is_file():
        import json

        config = json.loads((folder / "config.json").read_text())
    card = render_card(name, recipe=recipe, results=results, repo_id=repo_id, config=config)
    return atomic_write_text(folder / "README.md", str(card))


def set_card_section(folder: str | os.PathLike, heading: str, body: str) -> Path:
    """Append (or replace) a section ``heading`` (a markdown heading line) with ``body`` in ``folder/README.md``,
    keeping the metadata and everything before it; written atomically."""
    path = Path(folder) / "README.md"
    card = ModelCard.load(path)
    text = card.text.split(heading)[0].rstrip()
    card.text = f"{text}\n\n{heading}\n\n{body.strip()}\n"
    return atomic_write_text(path, str(card))
