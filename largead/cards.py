"""Model cards: one template, rendered through ``huggingface_hub.ModelCard``, and every edit of a card.

Every card of the project comes from here: zoo entries (``model_cards/``), pretrained checkpoints
(``training/pretrain.py``), converted official checkpoints and anything saved with ``save_pretrained`` (encoders and
fine-tuned segmentation models), so none gets the Hub mixin's generic card. The YAML metadata carries
``library_name: largead``, tags, the licence derived from the training data (:func:`card_license`) and a
``model-index`` of results: numbers *reported by the paper* for a zoo entry (marked with their source) and numbers
*measured* on the weights (:func:`update_card_results`, called by ``training/evaluate.py``). The card's *Evaluation*
section is always rendered from that ``model-index``, so text and metadata cannot disagree. Until a card is pushed,
its repository id is a placeholder; ``scripts/push_to_hub.py`` writes the real one in (:func:`with_repo_id`).

Datasets are named in the text, not in the ``datasets:`` metadata, which expects Hugging Face dataset ids: none of
the driving datasets is published on the Hub by its authors.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from largead import PAPER_URL
from largead.fileio import atomic_write_text
from largead.zoo import DATASET_LABELS, SOURCE_DESCRIPTIONS, TEACHERS, ModelInfo, PaperResult, model_info

PLACEHOLDER_REPO = "your-org/your-largead-encoder"
"""The repository id of a card that was never pushed (``scripts/push_to_hub.py`` replaces it)."""
TASK_TYPE = "semantic-segmentation"

# Licences of the data a model was trained on (the weights inherit their terms), from each dataset's own terms:
# nuScenes (nuscenes.org/terms-of-use) and SemanticKITTI (semantic-kitti.org, labels over KITTI's CC BY-NC-SA 3.0)
# are CC BY-NC-SA 4.0; Waymo Open is under its own non-commercial licence (waymo.com/open/terms). RELLIS-3D is
# CC BY-NC-SA 3.0; the others publish no standard licence id: "other", see the dataset's terms. The synthetic world is
# this project's (Apache-2.0).
DATA_LICENSES: dict[str, tuple[str, str | None, str | None]] = {
    "nuscenes": ("cc-by-nc-sa-4.0", None, None),
    "nuscenes_c": ("cc-by-nc-sa-4.0", None, None),
    "semantickitti": ("cc-by-nc-sa-4.0", None, None),
    "semantickitti_c": ("cc-by-nc-sa-4.0", None, None),
    "scribblekitti": ("cc-by-nc-sa-4.0", None, None),
    "rellis3d": ("cc-by-nc-sa-3.0", None, None),
    "waymo": ("other", "waymo-open-dataset-non-commercial", "https://waymo.com/open/terms/"),
    "synthetic": ("apache-2.0", None, None),
}

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


def paper_eval_results(results: Iterable[PaperResult | Mapping[str, Any]],
                       source_name: str | None = None) -> list[EvalResult]:
    """``EvalResult`` rows for numbers *reported* elsewhere (the paper): one per (dataset, protocol, fraction), metric
    mIoU in percent, with their source.

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
        source = d.get("source") or source_name or "reported"
        rows.append(EvalResult(
            task_type=TASK_TYPE,
            task_name="LiDAR semantic segmentation",
            dataset_type=str(d["dataset"]),
            dataset_name=DATASET_NAMES.get(str(d["dataset"]), str(d["dataset"])),
            dataset_config=_setting_config(str(d["protocol"]), float(d["fraction"])) + " (reported)",
            dataset_split=str(d.get("split", "val")),
            metric_type="mean_iou",
            metric_name=_metric_name(str(d["protocol"]), float(d["fraction"])),
            metric_value=round(float(d["miou"]), 2),
            source_name=source,
            source_url=PAPER_URL,
        ))
    return rows


def _setting_config(mode: str, fraction: float | None, corruption: str | None = None) -> str:
    """The setting as the ``dataset.config`` of a model-index row: huggingface_hub groups rows by (task, dataset,
    config, split), so two settings on one split need distinct configs or they are merged into one entry."""
    text = "linear probing" if mode == "linear_probe" else str(mode).replace("_", " ")
    if fraction is not None and (mode != "linear_probe" or float(fraction) != 100.0):
        text += f", {float(fraction):g}% labels"
    return text + (f", {corruption}" if corruption else "")


def _setting(results: Mapping[str, Any]) -> str:
    mode = str(results.get("mode") or "evaluation").replace("_", " ")
    frac = results.get("label_fraction")
    parts = [f"LiDAR semantic segmentation ({mode}"]
    if frac is not None:
        parts.append(f", {float(frac):g}% labels")
    corruption = results.get("corruption")
    if corruption:
        parts.append(f", {corruption}")
    return "".join(parts) + ")"


def measured_eval_results(results: Mapping[str, Any]) -> list[EvalResult]:
    """``EvalResult`` rows for a results dict as ``training/evaluate.py`` writes it (measured on these weights).

    Required keys: ``dataset``, ``split``, ``miou`` (fractions in [0, 1]); optional: ``miou_slidr``, ``accuracy``,
    ``mode``, ``label_fraction``, ``dataset_name``, and ``robustness`` (``{"mce", "mrr", "corruption_dataset"}``).
    Published in percent, like the papers.
    """
    import math

    missing = [k for k in ("dataset", "split", "miou") if k not in results]
    if missing:
        raise KeyError(f"results lack {missing}; got keys {sorted(results)}")
    task_name = _setting(results)
    dataset = str(results["dataset"])
    frac = results.get("label_fraction")
    common = dict(task_type=TASK_TYPE, task_name=task_name, dataset_type=dataset,
                  dataset_name=str(results.get("dataset_name") or DATASET_NAMES.get(dataset, dataset)),
                  dataset_config=_setting_config(str(results.get("mode") or "evaluation"),
                                                 None if frac is None else float(frac), results.get("corruption")),
                  dataset_split=str(results["split"]))
    out = []
    for key, metric_type, name in (("miou", "mean_iou", "mIoU"), ("miou_slidr", "mean_iou_slidr", "mIoU (SLidR)"),
                                   ("accuracy", "accuracy", "Accuracy")):
        v = results.get(key)
        if v is not None and not math.isnan(float(v)):
            out.append(EvalResult(**common, metric_type=metric_type, metric_name=name,
                                  metric_value=round(100.0 * float(v), 2)))
    rob = results.get("robustness")
    if rob:
        rob_name = str(rob.get("corruption_dataset", f"{dataset}-c"))
        rob_common = dict(common, dataset_type=rob_name, dataset_name=DATASET_NAMES.get(rob_name, rob_name),
                          task_name=task_name + " robustness")
        for key, name in (("mce", "mCE"), ("mrr", "mRR")):
            v = rob.get(key)
            if v is not None and not math.isnan(float(v)):
                out.append(EvalResult(**rob_common, metric_type=key, metric_name=name,
                                      metric_value=round(100.0 * float(v), 2)))
    return out


def _row_key(r: EvalResult) -> tuple:
    return (*r.unique_identifier, r.metric_type, r.metric_name)


def evaluation_text(rows: Iterable[EvalResult]) -> str:
    """The *Evaluation* section's body, rendered from the card's ``model-index`` rows: the numbers measured on
    these weights first, then those reported by the paper for this variant."""
    rows = list(rows)
    measured = [r for r in rows if not r.source_name]
    paper = [r for r in rows if r.source_name]
    parts = []
    if measured:
        lines = ["Measured on these weights (`training/evaluate.py`):", "",
                 "| dataset | split | setting | metric | value (%) |", "|---|---|---|---|---|"]
        lines += [f"| {r.dataset_name} | {r.dataset_split} | {r.task_name} | {r.metric_name} | {r.metric_value:.2f} |"
                  for r in measured]
        parts.append("\n".join(lines))
    if paper:
        lines = ["Reported by the LargeAD paper for this variant (not measured on these weights):", "",
                 "| dataset | setting | mIoU (%) | source |", "|---|---|---|---|"]
        lines += [f"| {r.dataset_name} | {r.metric_name} | {r.metric_value:.2f} | {r.source_name} |" for r in paper]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) or ("No results yet: `training/finetune.py` + `training/evaluate.py` write them into "
                                  "this card.")


def card_license(datasets: Iterable[str]) -> dict[str, str]:
    """The ``license`` metadata for weights trained on ``datasets`` (registry names): the most restrictive of their
    terms (:data:`DATA_LICENSES`); Apache-2.0 (the code's) when trained on nothing or only on the synthetic world.
    Returns ``{"license": ...}`` plus ``license_name`` / ``license_link`` for a non-standard licence."""
    names = sorted({str(d) for d in datasets})
    terms = [DATA_LICENSES.get(d, ("other", f"{d}-terms", None)) for d in names]
    custom = [(n, t) for n, t in zip(names, terms) if t[0] == "other"]
    if custom:
        if len(custom) == 1:
            out = {"license": "other", "license_name": custom[0][1][1] or f"{custom[0][0]}-terms"}
            if custom[0][1][2]:
                out["license_link"] = custom[0][1][2]
            return out
        return {"license": "other", "license_name": "+".join(t[1] or f"{n}-terms" for n, t in custom)}
    for ident in ("cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0"):  # most restrictive first (older version, same terms)
        if any(t[0] == ident for t in terms):
            return {"license": ident}
    return {"license": "apache-2.0"}


def _voxelisation(voxel_size: Any, cylindrical: bool) -> str:
    vs = [float(v) for v in voxel_size]
    if cylindrical:
        return f"cylindrical: rho / {vs[0]:g} m, azimuth / {vs[1]:g} deg, z / {vs[2]:g} m, floored (SLidR's grid)"
    return f"Cartesian: {vs[0]:g} x {vs[1]:g} x {vs[2]:g} m, floored"


def _license_text(datasets: list[str], lic: Mapping[str, str]) -> str:
    if not datasets:
        return ("Licence: Apache-2.0 (the code's). No training data is recorded for these weights; if they were trained "
                "on a dataset, its terms apply to them.")
    names = ", ".join(DATASET_NAMES.get(d, d) for d in datasets)
    if lic["license"] == "apache-2.0":
        return f"Licence: Apache-2.0 (trained on {names}, which is this project's own)."
    link = f" ({lic['license_link']})" if lic.get("license_link") else ""
    name = lic.get("license_name") or lic["license"]
    known_nc = lic["license"].startswith("cc-by-nc") or name == "waymo-open-dataset-non-commercial"
    return (f"Licence: `{name}`{link}, derived from the terms of the training data ({names}), which the weights "
            "inherit" + (": non-commercial use only." if known_nc else "; read those terms before use."))


def render_card(
    name: str | ModelInfo | None = None,
    *,
    recipe: Mapping[str, Any] | None = None,
    results: list[Mapping[str, Any]] | None = None,
    repo_id: str | None = None,
    config: Mapping[str, Any] | None = None,
    datasets: Iterable[str] | None = None,
    segmentation: Mapping[str, Any] | None = None,
    provenance: str | None = None,
    notice: str | None = None,
) -> ModelCard:
    """Render the card of zoo entry ``name`` and/or of trained weights.

    ``recipe``: the pretraining config as a dict (printed under *Recipe*; its ``datasets`` name the training data);
    ``results``: measured results dicts (as ``training/evaluate.py`` writes them) for the ``model-index`` and the
    *Evaluation* section; ``config``: the encoder's ``LargeADConfig`` as a dict when there is no zoo entry;
    ``datasets``: the training data when neither the zoo entry nor the recipe names it (it sets the licence);
    ``segmentation``: for a fine-tuned / linear-probed segmentation model, ``{"dataset", "class_names", "mode",
    "label_fraction", "pretrained"}``; ``provenance``: where the weights come from when there is no recipe (e.g. a
    converted official checkpoint); ``notice``: a warning shown first (e.g. a dry run with a random teacher).
    ``repo_id`` defaults to the zoo name, else :data:`PLACEHOLDER_REPO`.
    """
    info = model_info(name) if isinstance(name, str) else name
    cfg = info.config.to_dict() if info else dict(config or {})
    repo = repo_id or (info.name if info else PLACEHOLDER_REPO)
    seg = dict(segmentation) if segmentation else None
    trained_on = list(info.pretraining_datasets) if info else list((recipe or {}).get("datasets", []) or [])
    trained_on += [d for d in (datasets or []) if d not in trained_on]
    if seg and seg.get("dataset") and seg["dataset"] not in trained_on:
        trained_on.append(str(seg["dataset"]))
    source = info.source if info else str((recipe or {}).get("superpixels", (recipe or {}).get("source", "custom")))
    teacher = info.teacher if info else str((recipe or {}).get("teacher", "custom"))
    lic = card_license(trained_on)

    index_rows = paper_eval_results(info.paper_results if info and not seg else [])
    for r in results or []:
        index_rows = [x for x in index_rows if _row_key(x) not in {_row_key(n) for n in measured_eval_results(r)}]
        index_rows = measured_eval_results(r) + index_rows
    tags = TAGS + ([f"superpixels-{source}"] if source and not seg else []) + (["lidar-segmentation"] if seg else [])
    data = ModelCardData(
        library_name="largead",
        **lic,
        tags=tags,
        # no pipeline tag fits per-point 3D segmentation; encoders are feature extractors
        pipeline_tag=None if seg else "feature-extraction",
        model_name=repo,
        eval_results=index_rows or None,
    )
    recipe_text = "Pretraining config (`training/pretrain.py`):\n\n```yaml\n" + _yaml(recipe) + "```" if recipe else (
        f"`accelerate launch training/pretrain.py --config {info.config_file}`" if info and info.config_file else
        "Random initialisation: no pretraining." if info else provenance or "Not recorded with these weights.")
    if seg:
        classes = list(seg.get("class_names") or [])
        mode = str(seg.get("mode", "finetune")).replace("_", " ")
        frac = seg.get("label_fraction")
        seg_dataset = DATASET_NAMES.get(str(seg.get("dataset")), str(seg.get("dataset")))
        description = (f"LiDAR semantic segmentation on {seg_dataset} ({len(classes)} classes), {mode} of the "
                       f"LargeAD encoder `{seg.get('pretrained') or 'random initialisation'}`"
                       + (f" with {float(frac):g}% of the labels" if frac is not None else ""))
        data_text = (f"Trained with the labels of {seg_dataset} (`training/finetune.py`, {mode}"
                     + (f", {float(frac):g}% label fraction" if frac is not None else "") + "). Classes: "
                     + ", ".join(f"`{c}`" for c in classes) + ".")
    else:
        description = info.description if info else f"LargeAD LiDAR encoder `{repo}`"
        data_text = ("Pretraining used no labels: " + ", ".join(DATASET_NAMES.get(d, d) for d in trained_on) +
                     ", LiDAR sweeps with their synchronised, calibrated camera images."
                     if trained_on else "The training data of these weights is not recorded.")
    return ModelCard.from_template(
        data,
        template_path=str(template_path()),
        title=repo.split("/")[-1],
        repo_id=repo,
        description=description,
        published=bool(info.published) if info and not recipe else True,  # trained weights are what they describe
        segmentation=bool(seg),
        num_classes=len(seg.get("class_names") or []) if seg else 0,
        backbone=cfg.get("backbone", "minkunet34"),
        in_channels=cfg.get("in_channels", 1),
        feature_mode=cfg.get("feature_mode", "intensity"),
        feature_dim=cfg.get("out_channels", 64),
        voxelisation=_voxelisation(cfg.get("voxel_size", (0.1, 1.0, 0.1)), cfg.get("cylindrical", True)),
        source_label=SOURCE_DESCRIPTIONS.get(source, source) if source != "random" else "none (random init)",
        teacher_label=TEACHERS.get(teacher, teacher) if teacher else "none",
        data_label=" + ".join(DATASET_NAMES.get(d, d) for d in trained_on) or "not recorded",
        data_text=data_text,
        recipe_text=recipe_text,
        evaluation_text=evaluation_text(index_rows),
        license_text=_license_text(trained_on, lic),
        notice=notice or "",
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
    datasets: Iterable[str] | None = None,
    segmentation: Mapping[str, Any] | None = None,
    notice: str | None = None,
) -> Path:
    """Render a card (see :func:`render_card`) into ``folder/README.md`` atomically and return its path.

    When ``config`` is not given and ``folder/config.json`` exists, the encoder config is read from it.
    """
    folder = Path(folder)
    if config is None and (folder / "config.json").is_file():
        import json

        config = json.loads((folder / "config.json").read_text())
    card = render_card(name, recipe=recipe, results=results, repo_id=repo_id, config=config, datasets=datasets,
                       segmentation=segmentation, notice=notice)
    return atomic_write_text(folder / "README.md", str(card))


EVALUATION_HEADING = "## Evaluation"


def _replace_section(text: str, heading: str, body: str) -> str:
    """``text`` with the body of markdown section ``heading`` (up to the next ``## `` heading) replaced, or the
    section appended when there is none."""
    start = text.find(heading + "\n")
    if start < 0:
        return f"{text.rstrip()}\n\n{heading}\n\n{body.strip()}\n"
    after = start + len(heading) + 1
    nxt = text.find("\n## ", after)
    tail = text[nxt:] if nxt >= 0 else "\n"
    return f"{text[:start]}{heading}\n\n{body.strip()}\n{tail}"


def update_card_results(folder: str | os.PathLike, results: Mapping[str, Any]) -> Path:
    """Merge measured ``results`` (a results dict of ``training/evaluate.py``) into ``folder/README.md``: its
    ``model-index`` rows of the same setting (task, dataset, split, metric) are replaced, and the *Evaluation*
    section is rendered again from the whole ``model-index``. A folder without a card gets one rendered from its
    ``config.json`` (and ``segmentation.json``) first. Returns the card's path."""
    import json

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
    path = folder / "README.md"
    if not path.is_file():
        seg_path = folder / "segmentation.json"
        seg = json.loads(seg_path.read_text()) if seg_path.is_file() else None
        write_card(folder, segmentation=seg)
    card = ModelCard.load(path)
    new = measured_eval_results(results)
    keys = {_row_key(n) for n in new}
    rows = new + [r for r in (card.data.eval_results or []) if _row_key(r) not in keys]
    rows.sort(key=lambda r: bool(r.source_name))  # measured first, then reported
    card.data.eval_results = rows
    card.text = _replace_section(card.text, EVALUATION_HEADING, evaluation_text(rows))
    return atomic_write_text(path, str(card))


def with_repo_id(card_text: str, repo_id: str) -> str:
    """The card as it is pushed to ``repo_id``: its ``model_name`` and every mention of its previous repository id
    (a placeholder such as :data:`PLACEHOLDER_REPO`, or the id it was pushed under before) become ``repo_id``."""
    card = ModelCard(card_text)
    old = card.data.model_name
    if old and old != repo_id:
        card.text = card.text.replace(old, repo_id)
        if "/" in old and old.split("/")[-1] != repo_id.split("/")[-1]:
            card.text = card.text.replace(f"# {old.split('/')[-1]}\n", f"# {repo_id.split('/')[-1]}\n", 1)
    card.data.model_name = repo_id  # also the model-index's name
    return str(card)


def set_card_section(folder: str | os.PathLike, heading: str, body: str) -> Path:
    """Append (or replace) a section ``heading`` (a markdown heading line) with ``body`` in ``folder/README.md``,
    keeping the metadata and everything before it; written atomically."""
    path = Path(folder) / "README.md"
    card = ModelCard.load(path)
    text = card.text.split(heading)[0].rstrip()
    card.text = f"{text}\n\n{heading}\n\n{body.strip()}\n"
    return atomic_write_text(path, str(card))
