"""Superpixel sources behind one interface: ``get_source(name, **opts).segment(image, camera=None) -> (H, W) int32``.

========================  ===========================================================================================
name                      what it does
========================  ===========================================================================================
``slic``                  scikit-image SLIC with SLidR's parameters (no model)
``sam``                   Segment Anything automatic masks, in-process through ``transformers`` (:mod:`.sam`)
``panoptic``              a ``transformers`` panoptic segmenter (Mask2Former / OneFormer) as an installable semantic
                          VFM (:mod:`.panoptic`)
``seem``                  reads the PNGs of Seal's official SEEM script (SEEM cannot be pip-installed)
``xdecoder``, ``openseed``  read PNGs made by the official X-Decoder / OpenSeeD code, same layout
``precomputed``           reads any ``superpixels_<kind>`` folder written by ``scripts/generate_superpixels.py``
``synthetic-vfm``         segments of the synthetic world from its ground-truth masks, with controlled noise
========================  ===========================================================================================

Ids are ``>= 0``. What id 0 means depends on the generator that wrote the map, and each source knows it:
:attr:`SuperpixelSource.zero_is_segment` is ``True`` when 0 is a segment like any other and ``False`` when it marks
pixels no segment covers (the pretraining pipeline then ignores them; ``pipeline.superpixel_ignore_zero`` overrides).
The rule per source, and the official file it is read from:

- ``slic``: 0 is a segment. valeoai/SLidR ``superpixel_segmenter.py`` (``slic(..., start_label=0)``) and
  ``pretrain/lightning_trainer.py`` ``loss_superpixels_average`` (every id pooled).
- ``sam``, Seal's maps: 0 is a segment. youquanl/Segment-Any-Point-Cloud ``generation/SAM/superpixel_generation.py``
  sorts the masks by area and paints ``segments_sam[m] = id`` with ``id`` counted from 0 over a zero-filled map: the
  largest mask and the unmasked pixels share id 0 (usually road or sky, too large to drop).
- ``sam`` run here (:mod:`largead.superpixels.sam`, ``first_id=1``, the default): 0 is void (unmasked pixels only);
  ``first_id=0`` reproduces Seal's maps and their rule.
- ``seem``: 0 is void. Segment-Any-Point-Cloud ``generation/SEEM/demo_code/tasks/interactive.py`` saves the
  ``panoptic_seg`` of ``xdecoder/architectures/seem_model.py`` ``panoptic_inference``: a zero-filled map whose
  segment ids count from 1.
- ``xdecoder``: 0 is void. microsoft/X-Decoder ``modeling/architectures/xdecoder_model.py`` ``panoptic_inference``
  (the same zero-filled map, ids from 1).
- ``openseed`` (SuperFlow's published maps): 0 is a segment. Xiangxu-0103/SuperFlow
  ``superflow/models/selfsup/superflow.py`` pools every id ``0..superpixel_size-1`` of its ``openseed_inst17`` maps
  (``superpixel_size=17``, ``configs/_base_/models/superflow.py``), 0 included. OpenSeeD's own
  ``openseed/architectures/openseed_model.py`` ``panoptic_inference`` writes 0 for void: maps you make with it need
  ``pipeline.superpixel_ignore_zero: true``.
- ``panoptic`` (:mod:`largead.superpixels.panoptic`): 0 is void (no segment kept there).
- ``synthetic-vfm``: 0 is void (ids ``1..S``; 0 = segments left unmasked on purpose with ``granularity="sam"``).
- ``precomputed``: the ``_manifest.json`` that ``scripts/generate_superpixels.py`` writes beside the maps names the
  writing source and its settings, which decide; without one, the official generator's rule for ``kind`` (above).

Sources that read files need the camera (its ``token`` names the file); ``synthetic-vfm`` needs the camera's masks.
"""

from __future__ import annotations

import abc
import difflib
import importlib
import json
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from largead.data.frame import CameraView
from largead.superpixels.io import load_superpixels, superpixel_path

_SOURCES: dict[str, Callable[..., SuperpixelSource]] = {}
# Sources living in modules with heavy imports (transformers models); imported on first use.
_LAZY_MODULES = {"sam": "largead.superpixels.sam", "panoptic": "largead.superpixels.panoptic"}


def check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Return ``image`` if it is an (H, W, 3) uint8 array with H, W > 0, else raise ``ValueError`` naming ``what``."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{what}: expected an (H, W, 3) uint8 RGB image, got shape {arr.shape} dtype {arr.dtype}")
    return arr


class SuperpixelSource(abc.ABC):
    """Turns one camera image into an (H, W) int32 map of segment ids ``>= 0``.

    Subclasses implement :meth:`_segment`; :meth:`segment` validates the input and the output (shape equal to the
    image's, integer ids, none negative). :meth:`params` returns the JSON-serialisable settings written to manifests.
    """

    name: ClassVar[str] = ""
    needs_camera: ClassVar[bool] = False
    ZERO_IS_SEGMENT: ClassVar[bool] = True
    """Default of :meth:`zero_is_segment_for`: what id 0 means in maps this source writes (see the module table)."""

    @classmethod
    def zero_is_segment_for(cls, params: dict[str, Any]) -> bool:
        """Whether id 0 is a segment in maps this source writes with settings ``params`` (as :meth:`params` returns
        them and a generation manifest records them; ``{}`` = the official generator's maps)."""
        return cls.ZERO_IS_SEGMENT

    @property
    def zero_is_segment(self) -> bool:
        """``True``: id 0 is a segment like any other; ``False``: it marks pixels no segment covers (ignored in
        pretraining). The pretraining pipeline asks this (``pipeline.superpixel_ignore_zero`` overrides it)."""
        return type(self).zero_is_segment_for(self.params())

    def segment(self, image: np.ndarray, camera: CameraView | None = None) -> np.ndarray:
        """Segment ids (H, W) int32 of ``image`` (H, W, 3) uint8; ``camera`` is the view the image belongs to."""
        where = f"{self.name} superpixels" + (f" of camera {camera.name or camera.token}" if camera is not None else "")
        image = check_image(image, where)
        if self.needs_camera and camera is None:
            raise ValueError(f"{where}: source {self.name!r} needs the CameraView (token / masks), got camera=None")
        ids = np.asarray(self._segment(image, camera))
        if ids.shape != image.shape[:2] or not np.issubdtype(ids.dtype, np.integer):
            raise RuntimeError(f"{where}: source returned {ids.shape} {ids.dtype}, expected {image.shape[:2]} integers")
        if ids.size and int(ids.min()) < 0:
            raise RuntimeError(f"{where}: source returned negative ids (min {int(ids.min())})")
        return ids.astype(np.int32, copy=False)

    def segment_batch(
        self, images: Sequence[np.ndarray], cameras: Sequence[CameraView | None] | None = None
    ) -> list[np.ndarray]:
        """:meth:`segment` over several images (one per camera); sources with a batched model override this."""
        cameras = [None] * len(images) if cameras is None else list(cameras)
        if len(cameras) != len(images):
            raise ValueError(f"got {len(images)} images but {len(cameras)} cameras")
        return [self.segment(im, cam) for im, cam in zip(images, cameras)]

    @abc.abstractmethod
    def _segment(self, image: np.ndarray, camera: CameraView | None) -> np.ndarray:
        """Segment a validated image; return an (H, W) integer map of ids >= 0."""

    def params(self) -> dict[str, Any]:
        """Settings of this source, JSON-serialisable (written to the generation manifest)."""
        return {}

    @property
    def tag(self) -> str:
        """Folder tag of this source's maps on disk (``superpixels_<tag>``); the source name unless a setting
        changes what the maps are (``synthetic-vfm-seem`` / ``synthetic-vfm-sam``)."""
        return self.name

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


def register_source(name: str) -> Callable[[type[SuperpixelSource]], type[SuperpixelSource]]:
    """Class decorator: make a source available as ``get_source(name, ...)``."""

    def wrap(cls: type[SuperpixelSource]) -> type[SuperpixelSource]:
        if name in _SOURCES and _SOURCES[name] is not cls:
            raise ValueError(f"superpixel source {name!r} is already registered by {_SOURCES[name]}")
        cls.name = name
        _SOURCES[name] = cls
        return cls

    return wrap


def _source_class(name: str) -> type[SuperpixelSource] | None:
    """The registered class of source ``name`` (or of a map tag such as ``synthetic-vfm-seem``), ``None`` if unknown."""
    if name not in _SOURCES and name in _LAZY_MODULES:
        importlib.import_module(_LAZY_MODULES[name])
    if name in _SOURCES:
        return _SOURCES[name]  # type: ignore[return-value]
    base = next((n for n in sorted(_SOURCES, key=len, reverse=True) if name.startswith(f"{n}-")), None)
    return _SOURCES[base] if base is not None else None  # type: ignore[return-value]


def list_sources() -> list[str]:
    """Names accepted by :func:`get_source`, sorted."""
    return sorted(set(_SOURCES) | set(_LAZY_MODULES))


def get_source(name: str, **opts: Any) -> SuperpixelSource:
    """Build superpixel source ``name`` with options ``opts`` (see each source's class for its options)."""
    if name not in _SOURCES and name in _LAZY_MODULES:
        importlib.import_module(_LAZY_MODULES[name])
    if name not in _SOURCES:
        close = difflib.get_close_matches(name, list_sources(), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"unknown superpixel source {name!r}; known: {', '.join(list_sources())}.{hint}")
    return _SOURCES[name](**opts)


# ---------------------------------------------------------------------------------------------------------- SLIC


@register_source("slic")
class SlicSource(SuperpixelSource):
    """scikit-image SLIC, SLidR's settings: ``slic(image, n_segments=150, compactness=6, sigma=3.0, start_label=0)``.

    Ids start at 0 and 0 is a segment (SLidR's ``superpixel_segmenter.py`` and loss, see the module table). SLIC
    enforces connectivity, so a region of uniform colour may come back as few segments; the id count is at most about
    ``n_segments``.
    """

    ZERO_IS_SEGMENT = True

    def __init__(self, n_segments: int = 150, compactness: float = 6.0, sigma: float = 3.0, start_label: int = 0):
        if n_segments < 1 or compactness <= 0 or sigma < 0 or start_label not in (0, 1):
            raise ValueError(f"invalid SLIC parameters n_segments={n_segments}, compactness={compactness}, "
                             f"sigma={sigma}, start_label={start_label}")
        self.n_segments, self.compactness, self.sigma, self.start_label = int(n_segments), float(compactness), \
            float(sigma), int(start_label)

    def _segment(self, image: np.ndarray, camera: CameraView | None) -> np.ndarray:
        from skimage.segmentation import slic

        return slic(image, n_segments=self.n_segments, compactness=self.compactness, sigma=self.sigma,
                    start_label=self.start_label, channel_axis=-1)

    def params(self) -> dict[str, Any]:
        return {"n_segments": self.n_segments, "compactness": self.compactness, "sigma": self.sigma,
                "start_label": self.start_label}


# ------------------------------------------------------------------------------------------- precomputed maps


@register_source("precomputed")
class PrecomputedSource(SuperpixelSource):
    """Reads ``<root>/superpixels_<kind>/<camera.token>.png`` (or ``<directory>/<camera.token>.png``).

    The map must have the image's size (a mismatch raises ``ValueError`` naming the file); a missing file raises
    ``FileNotFoundError`` naming the file and how to produce it.

    What id 0 means (:attr:`zero_is_segment`): the ``_manifest.json`` beside the maps when there is one (written by
    ``scripts/generate_superpixels.py``: it names the writing source and its settings), else the rule of the official
    generator of ``kind`` (module table). A kind with neither is an error that says how to decide.
    """

    needs_camera = True
    how_to_make: ClassVar[str] = "run scripts/generate_superpixels.py --source <kind> --out <root>"

    def __init__(self, root: str | os.PathLike | None = None, kind: str | None = None,
                 directory: str | os.PathLike | None = None):
        kind = kind or (self.name if self.name != "precomputed" else None)
        if directory is None and (root is None or kind is None):
            raise ValueError(f"source {self.name!r}: give root= (the folder holding superpixels_<kind>/) and kind=, "
                             "or directory= (the folder holding <token>.png files)")
        self.root = None if root is None else Path(root)
        self.kind = kind
        self.directory = None if directory is None else Path(directory)

    @property
    def folder(self) -> Path:
        """The folder holding the ``<token>.png`` maps (and possibly ``_manifest.json``)."""
        if self.directory is not None:
            return self.directory
        return self.root / f"superpixels_{self.kind}"

    def manifest(self) -> dict[str, Any] | None:
        """The generation manifest beside the maps (``_manifest.json``), or ``None`` when there is none."""
        path = self.folder / "_manifest.json"
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: unreadable superpixel manifest: {err}") from err
        if not isinstance(data, dict) or not isinstance(data.get("source"), str):
            raise ValueError(f"{path}: superpixel manifest has no 'source' name")
        return data

    @property
    def zero_is_segment(self) -> bool:
        manifest = self.manifest()
        if manifest is not None:
            writer = manifest["source"]
            cls = _source_class(writer)
            if cls is None:
                raise ValueError(f"{self.folder / '_manifest.json'}: maps written by unknown source {writer!r}; set "
                                 "pipeline.superpixel_ignore_zero to say whether id 0 is a segment")
            return cls.zero_is_segment_for(dict(manifest.get("params") or {}))
        if type(self) is not PrecomputedSource:  # seem / xdecoder / openseed: the class knows its generator
            return type(self).zero_is_segment_for({})
        cls = _source_class(self.kind or "")
        if cls is None or cls is PrecomputedSource:
            raise ValueError(f"superpixels in {self.folder}: no _manifest.json and kind {self.kind!r} has no known "
                             "generator, so what id 0 means is unknown; set pipeline.superpixel_ignore_zero (true: 0 "
                             "marks unsegmented pixels, false: 0 is a segment)")
        return cls.zero_is_segment_for({})

    def path_for(self, token: str) -> Path:
        """Path of the PNG of camera image ``token``."""
        if self.directory is not None:
            superpixel_path(self.directory, self.kind or "precomputed", token)  # validates the token
            return self.directory / f"{token}.png"
        return superpixel_path(self.root, self.kind, token)

    def _segment(self, image: np.ndarray, camera: CameraView | None) -> np.ndarray:
        path = self.path_for(camera.token)
        if not path.is_file():
            raise FileNotFoundError(f"{self.name} superpixels of camera {camera.name or '?'} (token {camera.token!r}) "
                                    f"not found: {path}. To produce them: {self.how_to_make}")
        return load_superpixels(path, expected_hw=image.shape[:2])

    def params(self) -> dict[str, Any]:
        return {"root": None if self.root is None else str(self.root), "kind": self.kind,
                "directory": None if self.directory is None else str(self.directory)}


@register_source("seem")
class SeemSource(PrecomputedSource):
    """SEEM (Focal-L) panoptic id maps written by Seal's official script; SEEM itself is not pip-installable.

    Official generation (repository youquanl/Segment-Any-Point-Cloud, ``docs/document/SUPERPOINT.md``; install SEEM
    per its own guide, plus ``nuscenes-devkit``)::

        cd generation/SEEM/demo_code
        python superpixel_generation.py --conf_files configs/seem/seem_focall_lang.yaml \\
            -r ./data/sets/nuscenes -s ./superpixels/nuscenes/superpixels_seem/ -p ./seem_focall_v1.pt

    It walks every keyframe of nuScenes v1.0-trainval, runs SEEM's 'Panoptic' task over the COCO panoptic classes
    plus "background", and writes for every camera ``sample_data`` token ``<token>.png`` (the panoptic segment id map
    as 8-bit, 0 = no segment: SEEM's ``panoptic_inference`` (``xdecoder/architectures/seem_model.py`` in Seal's
    copy) starts from a zero map and numbers segments from 1) and ``<token>.json`` (the segments' info). Point
    ``root`` at the folder holding ``superpixels_seem/`` (``superpixels/nuscenes`` above). Id 0 is ignored.
    """

    ZERO_IS_SEGMENT = False

    how_to_make = ("run Seal's generation/SEEM/demo_code/superpixel_generation.py (see largead.superpixels.sources."
                   "SeemSource) with -s <root>/superpixels_seem/")


@register_source("xdecoder")
class XDecoderSource(PrecomputedSource):
    """X-Decoder panoptic id maps, same layout as :class:`SeemSource` (``<root>/superpixels_xdecoder/<token>.png``).

    Seal lists X-Decoder among its VFMs but has not released its X-Decoder generation script (as of its
    ``docs/document/SUPERPOINT.md``, "next update"). Produce the maps with the official X-Decoder panoptic demo
    (microsoft/X-Decoder) saving the panoptic id map as a single-channel PNG per camera token, or point
    ``directory=`` at maps obtained elsewhere. X-Decoder's ``panoptic_inference``
    (``modeling/architectures/xdecoder_model.py``) starts from a zero map and numbers segments from 1: id 0 is void
    and ignored.
    """

    ZERO_IS_SEGMENT = False

    how_to_make = ("run the official X-Decoder panoptic inference and save one single-channel id PNG per camera "
                   "token under <root>/superpixels_xdecoder/ (see largead.superpixels.sources.XDecoderSource)")


@register_source("openseed")
class OpenSeeDSource(PrecomputedSource):
    """OpenSeeD panoptic id maps, ``<root>/superpixels_openseed/<token>.png``.

    Seal has not released its OpenSeeD script. SuperFlow (Xiangxu-0103/SuperFlow, ``docs/DATA_PREPAER.md``) publishes
    OpenSeeD superpixels for nuScenes on the Hugging Face dataset ``Xiangxu-0103/SuperFlow_SuperPixel``, unpacked as
    ``data/openseed_inst17``; pass that folder as ``directory=``. Its loader
    (``superflow/datasets/transforms/loading.py``, ``LoadMultiModalityData``) reads
    ``<superpixel_root>/<camera sample_data token>.png``, the layout ``directory=`` expects.

    Id 0 is a segment: SuperFlow's loss (``superflow/models/selfsup/superflow.py``) pools every id
    ``0..superpixel_size-1`` (17), 0 included. Two differences to know: SuperFlow offsets ids per *sample*, so the same
    id in two cameras of one frame is one superpixel there, while here every image's ids are its own; and OpenSeeD's
    own panoptic inference writes 0 for void, so for maps made with it set ``pipeline.superpixel_ignore_zero: true``.
    """

    ZERO_IS_SEGMENT = True

    how_to_make = ("download SuperFlow's OpenSeeD superpixels (HF dataset Xiangxu-0103/SuperFlow_SuperPixel) and pass "
                   "directory=<.../openseed_inst17>, or write <root>/superpixels_openseed/<token>.png yourself")


# ------------------------------------------------------------------------------------- synthetic world "VFM"


def _adjacent_pairs(lab: np.ndarray) -> np.ndarray:
    """Unique ordered pairs (a, b), a != b, of labels touching horizontally or vertically; both directions."""
    h = np.stack([lab[:, :-1].ravel(), lab[:, 1:].ravel()], 1)
    v = np.stack([lab[:-1, :].ravel(), lab[1:, :].ravel()], 1)
    p = np.concatenate([h, v])
    p = p[p[:, 0] != p[:, 1]]
    return np.unique(np.concatenate([p, p[:, ::-1]]), axis=0)


def _merge_into_neighbours(lab: np.ndarray, chosen: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Relabel each chosen segment (``chosen[id]``) as one random adjacent segment that is not chosen itself."""
    pairs = _adjacent_pairs(lab)
    pairs = pairs[chosen[pairs[:, 0]] & ~chosen[pairs[:, 1]]]
    if len(pairs) == 0:
        return lab
    pairs = pairs[rng.permutation(len(pairs))]
    src, first = np.unique(pairs[:, 0], return_index=True)
    lut = np.arange(len(chosen))
    lut[src] = pairs[first, 1]
    return lut[lab]


@register_source("synthetic-vfm")
class SyntheticVFMSource(SuperpixelSource):
    """Segments of the synthetic world, made from the camera's ground-truth masks with controlled noise.

    Stands in for a vision foundation model where none can run: the synthetic renderer knows every pixel's class
    (``CameraView.semantic_mask``) and object (``CameraView.instance_mask``, 0 = stuff), and this source degrades that
    truth into what a VFM would return:

    - ``granularity="seem"`` (compact, semantic, like SEEM panoptic maps): every object instance is one segment; every
      stuff class is cut by a coarse grid (``stuff_grid`` = (rows, cols), cuts jittered) into a few regions; then each
      segment merges into a random neighbour with probability ``merge_prob`` (under-segmentation across classes).
    - ``granularity="sam"`` (finer, part-level, like SAM): every instance is cut into ``parts`` pieces (random split
      of its bounding box into a grid of 2..``parts`` cells), stuff by a finer grid; rare merges; each segment is
      left unmasked (id 0) with probability ``drop_prob``, as SAM leaves pixels no mask covers.

    Afterwards every segment is a connected region (disconnected pieces get their own id) and fragments smaller than
    ``min_size`` pixels merge into a neighbour. Ids are ``1..S`` (0 = unmasked, ignored in pretraining). Deterministic:
    the randomness is seeded by ``seed`` and the camera's token (or, without one, a checksum of its masks).
    """

    ZERO_IS_SEGMENT = False
    needs_camera = True
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "seem": {"stuff_grid": (1, 3), "parts": 1, "merge_prob": 0.05, "drop_prob": 0.0, "min_size": 16},
        "sam": {"stuff_grid": (3, 6), "parts": 4, "merge_prob": 0.01, "drop_prob": 0.03, "min_size": 8},
    }

    def __init__(self, granularity: str = "seem", seed: int = 0, **overrides: Any):
        if granularity not in self.PRESETS:
            raise ValueError(f"granularity must be one of {sorted(self.PRESETS)}, got {granularity!r}")
        unknown = set(overrides) - set(self.PRESETS[granularity])
        if unknown:
            raise TypeError(f"unknown synthetic-vfm options {sorted(unknown)}; known: {sorted(self.PRESETS['seem'])}")
        cfg = {**self.PRESETS[granularity], **overrides}
        self.granularity, self.seed = granularity, int(seed)
        self.stuff_grid = (int(cfg["stuff_grid"][0]), int(cfg["stuff_grid"][1]))
        self.parts, self.min_size = int(cfg["parts"]), int(cfg["min_size"])
        self.merge_prob, self.drop_prob = float(cfg["merge_prob"]), float(cfg["drop_prob"])
        if min(self.stuff_grid) < 1 or self.parts < 1 or not (0 <= self.merge_prob <= 1 and 0 <= self.drop_prob < 1):
            raise ValueError(f"invalid synthetic-vfm options {cfg}")

    @property
    def tag(self) -> str:
        return f"{self.name}-{self.granularity}"

    def params(self) -> dict[str, Any]:
        return {"granularity": self.granularity, "seed": self.seed, "stuff_grid": list(self.stuff_grid),
                "parts": self.parts, "merge_prob": self.merge_prob, "drop_prob": self.drop_prob,
                "min_size": self.min_size}

    def _rng(self, camera: CameraView, sem: np.ndarray, inst: np.ndarray) -> np.random.Generator:
        key = zlib.crc32(camera.token.encode()) if camera.token else zlib.crc32(sem.tobytes() + inst.tobytes())
        return np.random.default_rng([self.seed, key])

    def _segment(self, image: np.ndarray, camera: CameraView | None) -> np.ndarray:
        from skimage.measure import label as connected_components

        where = f"synthetic-vfm: camera {camera.name or camera.token}"
        if camera.semantic_mask is None or camera.instance_mask is None:
            raise ValueError(f"{where} has no semantic_mask/instance_mask (only synthetic-world cameras carry them)")
        sem = np.asarray(camera.semantic_mask).astype(np.int64)
        inst = np.asarray(camera.instance_mask).astype(np.int64)
        hw = image.shape[:2]
        if sem.shape != hw or inst.shape != hw:
            raise ValueError(f"{where}: masks are {sem.shape}/{inst.shape}, image is {hw}")
        rng = self._rng(camera, sem, inst)
        h, w = hw
        rows, cols = np.arange(h), np.arange(w)

        # Stuff: class x cell of a gy x gx grid whose cuts are jittered around the regular positions.
        gy, gx = self.stuff_grid
        cut_y = (np.arange(1, gy) + rng.uniform(-0.3, 0.3, gy - 1)) * h / gy
        cut_x = (np.arange(1, gx) + rng.uniform(-0.3, 0.3, gx - 1)) * w / gx
        cell = np.searchsorted(cut_y, rows)[:, None] * gx + np.searchsorted(cut_x, cols)[None, :]
        code = ((sem - sem.min()) * (gy * gx) + cell) * 2  # even codes: stuff

        # Things: instance x part (random grid over the instance's bounding box).
        thing = inst > 0
        if thing.any():
            ids, inv = np.unique(inst[thing], return_inverse=True)
            yy, xx = np.nonzero(thing)
            n = len(ids)
            y0 = np.full(n, h); y1 = np.zeros(n, np.int64); x0 = np.full(n, w); x1 = np.zeros(n, np.int64)
            np.minimum.at(y0, inv, yy); np.maximum.at(y1, inv, yy)
            np.minimum.at(x0, inv, xx); np.maximum.at(x1, inv, xx)
            if self.parts > 1:
                total = rng.integers(2, self.parts + 1, size=n)
                py = np.where(rng.random(n) < 0.5, 1, np.minimum(2, total))
                px = np.maximum(1, total // py)
            else:
                py = px = np.ones(n, np.int64)
            ry = (yy - y0[inv]) / np.maximum(y1[inv] - y0[inv] + 1, 1)
            rx = (xx - x0[inv]) / np.maximum(x1[inv] - x0[inv] + 1, 1)
            part = np.minimum((ry * py[inv]).astype(np.int64), py[inv] - 1) * px[inv] + \
                np.minimum((rx * px[inv]).astype(np.int64), px[inv] - 1)
            code[thing] = (inv * (self.parts + 1) + part) * 2 + 1  # odd codes: things

        lab = connected_components(code, background=-1, connectivity=1)  # every pixel labelled 1..S, connected
        lab = self._merge_small(lab, rng)
        if self.merge_prob > 0:
            chosen = rng.random(int(lab.max()) + 1) < self.merge_prob
            lab = _merge_into_neighbours(lab, chosen, rng)
        _, ids = np.unique(lab, return_inverse=True)
        ids = ids.reshape(hw) + 1  # consecutive 1..S
        if self.drop_prob > 0:  # unmasked segments become 0; the kept ones are renumbered 1..S'
            keep = rng.random(int(ids.max())) >= self.drop_prob
            lut = np.zeros(len(keep) + 1, np.int64)
            lut[1:][keep] = np.arange(1, int(keep.sum()) + 1)
            ids = lut[ids]
        return ids.astype(np.int32)

    def _merge_small(self, lab: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        counts = np.bincount(lab.ravel())
        small = (counts < self.min_size) & (counts > 0)
        return _merge_into_neighbours(lab, small, rng) if small.any() else lab
