"""The model zoo: every pretrained variant the LargeAD paper defines, by name.

A name is ``largead/<backbone>-<source>-<data>[-<teacher>]``:

- ``backbone``: ``minkunet34`` (other MinkUNet depths are built through :class:`~largead.LargeADConfig`, not named here);
- ``source``: the superpixels distilled: ``slic``, ``sam``, ``seem``, ``xdecoder``, ``openseed``;
- ``data``: pretraining data, ``n`` (nuScenes), ``k`` (SemanticKITTI), ``w`` (Waymo Open) or ``nkw`` (all three);
- ``teacher``: the frozen 2D backbone, ``resnet50`` (MoCo v2, as SLidR), ``vit-s``, ``vit-b``, ``vit-l`` (DINOv2, as
  LargeAD). Without the suffix the name means :data:`DEFAULT_TEACHER` (``vit-b``), so ``largead/minkunet34-seem-nkw``
  is the ViT-B/14-distilled encoder pretrained on nuScenes + SemanticKITTI + Waymo with SEEM superpixels.

``largead/minkunet34-random`` is the randomly initialised baseline every table compares against.

Each entry records the encoder's architecture as a :class:`~largead.LargeADConfig` (backbone, voxelisation, input
features, output width: the one spec the training configs and :func:`create_encoder` build from), the training
config that produces it (``training/configs/<name>.yaml``), the numbers the paper reports for it (with the table
they come from) and whether weights are published on the Hub. Nothing here downloads anything.

    >>> from largead import create_encoder
    >>> enc = create_encoder("minkunet34-seem-nkw", pretrained=False)   # the architecture, random weights
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from largead.models.encoder import LargeADConfig, LargeADEncoder

ORG = "largead"
BACKBONES = ("minkunet34",)
BACKBONE_LABELS = {"minkunet14": "MinkUNet-14", "minkunet18": "MinkUNet-18", "minkunet34": "MinkUNet-34",
                   "minkunet50": "MinkUNet-50"}
SOURCES = ("slic", "sam", "seem", "xdecoder", "openseed")
DATA = {"n": ("nuscenes",), "k": ("semantickitti",), "w": ("waymo",), "nkw": ("nuscenes", "semantickitti", "waymo")}
TEACHERS = {
    "resnet50": "ResNet-50, MoCo v2 (800 epochs), dilated (SLidR's teacher)",
    "vit-s": "DINOv2 ViT-S/14",
    "vit-b": "DINOv2 ViT-B/14",
    "vit-l": "DINOv2 ViT-L/14",
}
DEFAULT_TEACHER = "vit-b"
SOURCE_DESCRIPTIONS = {
    "slic": "SLIC superpixels (scikit-image, 150 segments; SLidR's setting)",
    "sam": "Segment Anything (ViT-H automatic mask generator), masks ordered largest first",
    "seem": "SEEM (Focal-L) panoptic segments over COCO classes",
    "xdecoder": "X-Decoder panoptic segments",
    "openseed": "OpenSeeD panoptic segments",
}
DATASET_LABELS = {"nuscenes": "nuScenes", "semantickitti": "SemanticKITTI", "waymo": "Waymo Open"}


@dataclass(frozen=True)
class PaperResult:
    """One number the paper (or its predecessors, as the paper re-reports them) gives for a variant."""

    dataset: str  # registry dataset name, e.g. "nuscenes"
    protocol: str  # "linear_probe" or "finetune"
    fraction: float  # fraction of labelled training data, percent (100 for linear probing on all labels)
    miou: float  # percent
    source: str  # where the number comes from


@dataclass(frozen=True)
class ModelInfo:
    """Everything known about one zoo entry."""

    name: str  # the Hub repo id, e.g. "largead/minkunet34-seem-nkw"
    backbone: str
    source: str  # superpixel source, or "random"
    data: str  # "n" | "k" | "w" | "nkw" | "" (random)
    teacher: str  # teacher key, or "" (random)
    pretraining_datasets: tuple[str, ...]
    # LargeADConfig fields that differ from its defaults; the defaults are the encoder every zoo entry pretrains
    # (LargeAD / SLidR: intensity input, cylindrical voxels 0.1 m / 1 degree / 0.1 m, 64-d L2-normalised output)
    encoder: dict[str, Any] = field(default_factory=dict)
    config_file: str | None = None  # training/configs/<...>.yaml that produces it
    published: bool = False  # weights on the Hub
    paper_results: tuple[PaperResult, ...] = field(default_factory=tuple)
    aliases: tuple[str, ...] = ()

    @property
    def config(self) -> LargeADConfig:
        """The entry's architecture: a fresh :class:`~largead.LargeADConfig` (built on demand, so listing the zoo
        needs no torch)."""
        from largead.models.encoder import LargeADConfig

        return LargeADConfig(**self.encoder)

    @property
    def short_name(self) -> str:
        return self.name.split("/", 1)[1]

    @property
    def description(self) -> str:
        if self.source == "random":
            return f"{BACKBONE_LABELS[self.backbone]} with random initialisation (the baseline of every table)"
        data = " + ".join(DATASET_LABELS[d] for d in self.pretraining_datasets)
        return (f"{BACKBONE_LABELS[self.backbone]} pretrained on {data} by distilling {TEACHERS[self.teacher]} "
                f"through {SOURCE_DESCRIPTIONS[self.source]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field (``config`` as its dict), plus the description."""
        from dataclasses import fields

        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "encoder":
                f_name, value = "config", self.config.to_dict()
                out[f_name] = value
                continue
            if f.name == "paper_results":
                value = [r.__dict__.copy() for r in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        out["description"] = self.description
        return out


def _results(*rows: tuple[str, str, float, float, str]) -> tuple[PaperResult, ...]:
    return tuple(PaperResult(*r) for r in rows)


_FT_FRACTIONS = (1, 5, 10, 25, 100)


def _nuscenes_protocols(lp: float, ft: tuple[float, ...], src: str) -> list[tuple[str, str, float, float, str]]:
    rows = [("nuscenes", "linear_probe", 100, lp, src)]
    rows += [("nuscenes", "finetune", f, v, src) for f, v in zip(_FT_FRACTIONS, ft)]
    return rows


# Numbers as the LargeAD paper and its predecessors report them (mIoU %, MinkUNet-34). SLidR's and Seal's numbers are
# re-reported by LargeAD as the SLIC/SEEM single-source rows (LargeAD Table 8: "SEEM 44.95 vs SLIC 38.80").
_PAPER: dict[str, tuple[PaperResult, ...]] = {
    "minkunet34-random": _results(
        *_nuscenes_protocols(8.10, (30.30, 47.84, 56.15, 65.48, 74.66), "LargeAD/Seal Table 1 (random init)"),
        ("semantickitti", "finetune", 1, 39.50, "LargeAD/Seal Table 1 (random init)"),
        ("waymo", "finetune", 1, 39.41, "LargeAD/Seal Table 1 (random init)"),
    ),
    "minkunet34-slic-n-resnet50": _results(
        *_nuscenes_protocols(38.80, (38.30, 52.49, 59.84, 66.91, 74.79), "SLidR as re-reported in LargeAD Tables 1, 8"),
        ("semantickitti", "finetune", 1, 44.60, "SLidR as re-reported in LargeAD Table 1"),
        ("waymo", "finetune", 1, 47.12, "SLidR as re-reported in LargeAD Table 1"),
    ),
    "minkunet34-seem-n-resnet50": _results(
        *_nuscenes_protocols(44.95, (45.84, 55.64, 62.97, 68.41, 75.60), "Seal / LargeAD Table 8 (SEEM superpixels)"),
        ("semantickitti", "finetune", 1, 46.63, "Seal as re-reported in LargeAD Table 1"),
        ("waymo", "finetune", 1, 49.34, "Seal as re-reported in LargeAD Table 1"),
    ),
    "minkunet34-seem-n-vit-s": _results(("nuscenes", "linear_probe", 100, 45.16, "LargeAD Table 1 (DINOv2 ViT-S)")),
    "minkunet34-seem-n": _results(("nuscenes", "linear_probe", 100, 46.59, "LargeAD Tables 1, 11 (DINOv2 ViT-B, N only)")),
    "minkunet34-seem-n-vit-l": _results(("nuscenes", "linear_probe", 100, 46.81, "LargeAD Table 1 (DINOv2 ViT-L)")),
    "minkunet34-seem-nkw": _results(("nuscenes", "linear_probe", 100, 47.84, "LargeAD Table 11 (N+K+W, DINOv2 ViT-B)")),
}


def _build() -> dict[str, ModelInfo]:
    entries: dict[str, ModelInfo] = {}
    for backbone in BACKBONES:
        rid = f"{backbone}-random"
        entries[f"{ORG}/{rid}"] = ModelInfo(
            name=f"{ORG}/{rid}", backbone=backbone, source="random", data="", teacher="",
            pretraining_datasets=(), encoder={"backbone": backbone}, config_file=None,
            paper_results=_PAPER.get(rid, ()),
        )
        for source in SOURCES:
            for data, datasets in DATA.items():
                for teacher in TEACHERS:
                    short = f"{backbone}-{source}-{data}"
                    aliases: tuple[str, ...] = ()
                    if teacher == DEFAULT_TEACHER:
                        aliases = (f"{ORG}/{short}-{teacher}",)
                    else:
                        short = f"{short}-{teacher}"
                    entries[f"{ORG}/{short}"] = ModelInfo(
                        name=f"{ORG}/{short}", backbone=backbone, source=source, data=data, teacher=teacher,
                        pretraining_datasets=datasets, encoder={"backbone": backbone},
                        config_file=f"training/configs/{short}.yaml",
                        paper_results=_PAPER.get(short, ()), aliases=aliases,
                    )
    return entries


REGISTRY: dict[str, ModelInfo] = _build()
_ALIASES: dict[str, str] = {a: info.name for info in REGISTRY.values() for a in info.aliases}


def list_models(filter: str | None = None) -> list[str]:  # noqa: A002 - mirrors timm.list_models
    """Names of all zoo entries, sorted; ``filter`` is a glob (``"*seem*"``) matched with or without the org."""
    names = sorted(REGISTRY)
    if filter:
        pat = filter if "/" in filter else f"{ORG}/{filter}"
        names = [n for n in names if fnmatch.fnmatch(n, pat)]
    return names


def _strip_hub_prefix(name: str) -> str:
    """``name`` without surrounding blanks and a leading ``hf-hub:`` (timm's spelling of Hub ids)."""
    name = name.strip()
    return name[len("hf-hub:"):] if name.startswith("hf-hub:") else name


def _canonical(name: str) -> str:
    name = _strip_hub_prefix(name).split("@", 1)[0]
    if "/" not in name:
        name = f"{ORG}/{name}"
    return _ALIASES.get(name, name)


def suggest(name: str, n: int = 3) -> list[str]:
    """The registry names closest to ``name``."""
    return difflib.get_close_matches(_canonical(name), REGISTRY, n=n, cutoff=0.5)


class UnknownModelError(KeyError):
    """A name that is neither a zoo entry nor a plausible repo id/folder."""

    def __str__(self) -> str:  # KeyError quotes its message; print it plainly
        return str(self.args[0])


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a zoo entry (``largead/...``, the short name, or an alias)."""
    key = _canonical(name)
    if key not in REGISTRY:
        close = suggest(name)
        hint = f" Closest known names: {', '.join(close)}." if close else ""
        raise UnknownModelError(f"unknown model {name!r}: not in the largead zoo.{hint} See `largead list` "
                                "(a newer zoo comes with a newer largead).")
    return REGISTRY[key]


def zoo_entry(repo_id: str) -> ModelInfo | None:
    """The :class:`ModelInfo` of ``repo_id`` (an alias resolves) or ``None`` when the zoo does not list it."""
    return REGISTRY.get(_ALIASES.get(repo_id, repo_id))


_REVISION = re.compile(r"^(?P<id>[^@]+)(?:@(?P<rev>[^@]+))?$")


def resolve(name: str) -> tuple[str, str | None]:
    """Map what a user typed to ``(repo_id, revision)``.

    Accepts zoo names with or without the ``largead/`` org, aliases, ``hf-hub:org/name`` and ``...@revision``. A name
    without a slash, or in the ``largead`` org, must be a zoo entry (else :class:`UnknownModelError` with the closest
    names: the org publishes only what the zoo lists, and a newer zoo comes with a newer largead); any other
    ``org/name`` is passed through, so your own repos load without a registry.
    """
    m = _REVISION.match(_strip_hub_prefix(name))
    if not m:
        raise ValueError(f"cannot parse model name {name!r}; expected org/name[@revision]")
    repo, rev = m.group("id"), m.group("rev")
    if "/" not in repo or repo.split("/", 1)[0] == ORG:
        info = model_info(repo) if "/" not in repo else zoo_entry(repo)
        if info is None:
            model_info(repo)  # raises UnknownModelError with the closest names
        repo = info.name
    return _ALIASES.get(repo, repo), rev


def encoder_config(name: str) -> LargeADConfig:
    """A copy of the :class:`~largead.LargeADConfig` of a zoo entry (architecture and voxelisation)."""
    return model_info(name).config


def create_encoder(name: str, pretrained: bool = False, **kwargs: Any) -> LargeADEncoder:
    """Build the encoder of zoo entry ``name`` (timm's ``create_model``).

    ``pretrained=False``: the entry's architecture with random weights (no network, nothing cached needed; this is
    what ``largead/minkunet34-random`` means). ``pretrained=True``: the entry's weights through
    :meth:`LargeADEncoder.from_pretrained` (published, or already in the Hugging Face cache); ``kwargs`` go there
    (``revision``, ``local_files_only``, ``map_location``...). The entry's config is checked against the loaded one.
    """
    from largead.models.encoder import LargeADEncoder

    info = model_info(name)
    if not pretrained:
        if kwargs:
            raise TypeError(f"create_encoder(pretrained=False) takes no loading options, got {sorted(kwargs)}")
        return LargeADEncoder(info.config)
    encoder = LargeADEncoder.from_pretrained(info.name, **kwargs)
    want, got = info.config.to_dict(), encoder.config.to_dict()
    arch = ("backbone", "in_channels", "out_channels", "feature_mode", "voxel_size", "cylindrical")
    diff = [k for k in arch if want[k] != got[k]]
    if diff:
        raise ValueError(f"{info.name}: the published config.json differs from the zoo entry in {diff} "
                         f"({[got[k] for k in diff]} vs {[want[k] for k in diff]}); upgrade largead")
    return encoder
