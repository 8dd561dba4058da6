"""Superpixel maps in each official generator's output layout, for samples, tests and dry runs.

SEEM, X-Decoder and OpenSeeD do not run here (their code is not an installable package) and SAM needs its ViT-H
weights, yet the pretraining configs read their maps. :func:`write_generator_maps` writes, for every camera image of
a dataset, a map *laid out and numbered the way each official generator writes it*, so that a config can be dry-run
end to end on any dataset root (e.g. the official-layout samples of :mod:`largead.data.export`):

==============  ==========================================  =================================================
generator       file (``<out>/...``) and format             ids (what 0 means)
==============  ==========================================  =================================================
``sam``         ``superpixels_sam/<token>.png``, 8-bit      Seal's ``generation/SAM/superpixel_generation.py``:
                                                            masks sorted by area, largest first, painted over
                                                            a zero map with their rank (0, 1, ...), cast to
                                                            uint8 (ranks wrap at 256): id 0 is the largest
                                                            mask *and* the unmasked pixels, a segment
``seem``        ``superpixels_seem/<token>.png``, 8-bit,    Seal's ``generation/SEEM/demo_code/tasks/
                plus ``<token>.json``                       interactive.py``: the ``panoptic_seg`` map (zero
                                                            map, segments numbered from 1; 0 = void) as uint8,
                                                            and its ``segments_info`` list (``id``,
                                                            ``isthing``, ``category_id``) as JSON beside it
``xdecoder``    ``superpixels_xdecoder/<token>.png``, 8-bit  X-Decoder's ``panoptic_inference`` (same map as
                                                            SEEM, 0 = void); no Seal script exists, so no JSON
``openseed``    ``superpixels_openseed/<token>.png``, 8-bit  SuperFlow's published ``openseed_inst17`` maps: ids
                                                            ``0..16``, every one a segment (0 included, here
                                                            the largest)
==============  ==========================================  =================================================

These are exactly what :class:`largead.superpixels.sources.PrecomputedSource` (``kind="sam"``), ``SeemSource``,
``XDecoderSource`` and ``OpenSeeDSource`` read (``root=<out>``), with the id-0 rule each of them applies.

The *content* is not a VFM's: the segments come from ``segmenter`` (default: SLIC with 48 segments, which runs on
any image) and are turned into the generator's masks: the 10 % smallest segments (at least one, when there are
several) become what the generator leaves uncovered (SAM: unmasked pixels, which share id 0 with the largest mask;
SEEM / X-Decoder: void 0), and OpenSeeD's 17 ids are the 16 largest segments by area (0..15) plus everything else
(16).
A map made here is a layout sample, not a distillation target: say so wherever its results are reported.

For real maps run the official generators (see each source class) or ``scripts/generate_superpixels.py`` (SLIC,
SAM through ``transformers``, Mask2Former panoptic).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from largead.fileio import atomic_write_text
from largead.superpixels.io import save_superpixels, superpixel_path
from largead.superpixels.sources import SuperpixelSource, get_source

__all__ = ["GENERATORS", "SAMPLE_DATASETS", "GeneratorMap", "generator_map", "sample_splits", "write_generator_maps",
           "write_superpixel_samples"]

GENERATORS: tuple[str, ...] = ("sam", "seem", "xdecoder", "openseed")
"""The official generators whose output layout :func:`write_generator_maps` reproduces."""

OPENSEED_IDS = 17
"""SuperFlow's ``superpixel_size`` (its ``openseed_inst17`` maps hold ids ``0..16``)."""

SEEM_NO_CLASS = 133
"""``category_id`` written into SEEM's ``segments_info`` here: index 133 is the ``"background"`` query Seal's script
appends to the 133 COCO panoptic classes (the sample's segments carry no semantic class)."""

UNCOVERED_FRACTION = 0.1
"""Share of the smallest segments a generator leaves uncovered (SAM) or void (SEEM, X-Decoder)."""

SAMPLE_DATASETS: tuple[str, ...] = ("nuscenes", "semantickitti", "waymo")
"""The official-layout samples with cameras (the pretraining datasets) that :func:`write_superpixel_samples` covers."""


@dataclass(frozen=True)
class GeneratorMap:
    """One map in a generator's numbering: ``ids`` (H, W) uint8 as the generator saves it and, for SEEM, the
    ``segments_info`` list saved beside it (``None`` for the others)."""

    ids: np.ndarray
    info: list[dict[str, Any]] | None = None


def _ranked(segments: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(rank of every pixel's segment by area, largest first (stable), number of segments, number left uncovered)."""
    _, inverse, counts = np.unique(segments, return_inverse=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    rank_of = np.empty_like(order)
    rank_of[order] = np.arange(len(order))
    n = len(counts)
    uncovered = max(1, int(round(n * UNCOVERED_FRACTION))) if n > 1 else 0
    return rank_of[inverse.reshape(segments.shape)], n, uncovered


def generator_map(segments: np.ndarray, generator: str) -> GeneratorMap:
    """Turn an (H, W) map of segments into ``generator``'s numbering (see the module table).

    ``sam``: the kept segments are Seal's masks; they are painted with :func:`largead.superpixels.sam.masks_to_ids`
    (``first_id=0``, Seal's painting) and cast to uint8 as Seal's script does (ids wrap at 256).
    ``seem`` / ``xdecoder``: kept segments numbered ``1..K`` by area, largest first; dropped ones 0 (void).
    ``openseed``: the 16 largest segments ``0..15`` by area (0, the largest, is a segment in SuperFlow's maps), all
    other pixels 16.
    """
    seg = np.asarray(segments)
    if seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer) or seg.size == 0:
        raise ValueError(f"segments must be a non-empty (H, W) integer map, got shape {seg.shape} dtype {seg.dtype}")
    rank, n, uncovered = _ranked(seg)
    kept = n - uncovered
    if generator == "sam":
        from largead.superpixels.sam import masks_to_ids

        masks = rank[None] == np.arange(kept)[:, None, None]  # (K, H, W), one mask per kept segment
        ids = masks_to_ids(masks, first_id=0)
        return GeneratorMap((ids % 256).astype(np.uint8))
    if generator in ("seem", "xdecoder"):
        if kept > 255:
            raise ValueError(f"{generator}: {kept} segments do not fit the 8-bit map the official script saves")
        ids = np.where(rank < kept, rank + 1, 0).astype(np.uint8)
        info = None
        if generator == "seem":
            info = [{"id": int(i), "isthing": False, "category_id": SEEM_NO_CLASS} for i in range(1, kept + 1)]
        return GeneratorMap(ids, info)
    if generator == "openseed":
        return GeneratorMap(np.minimum(rank, OPENSEED_IDS - 1).astype(np.uint8))
    raise ValueError(f"unknown generator {generator!r}; expected one of {', '.join(GENERATORS)}")


def write_generator_maps(frames: Iterable[Any], out: str | os.PathLike, generators: Sequence[str] = GENERATORS,
                         segmenter: SuperpixelSource | None = None, what: str = "dataset") -> dict[str, int]:
    """Write every camera image's map of ``frames`` (``Frame`` objects, e.g. a dataset opened with its cameras on) in
    each of ``generators``' layouts under ``out`` (``out/superpixels_<generator>/<camera token>.png``, see the module
    table). Returns ``{generator: maps written}``.

    Every image is segmented once by ``segmenter`` (default ``get_source("slic", n_segments=48)``). A frame without
    cameras or a camera without a token raises ``ValueError`` naming it (``what`` names the data in messages); a
    camera token met twice is written once. Files are written atomically (:mod:`largead.fileio`).
    """
    unknown = [g for g in generators if g not in GENERATORS]
    if unknown:
        raise ValueError(f"unknown generators {unknown}; expected some of {list(GENERATORS)}")
    segmenter = segmenter or get_source("slic", n_segments=48)
    out = Path(out)
    written = dict.fromkeys(generators, 0)
    seen: set[str] = set()
    for i, frame in enumerate(frames):
        where = f"{what} frame {i} ({frame.token or frame.sequence or '?'})"
        if not frame.cameras:
            raise ValueError(f"{where} has no camera image (open the dataset with its cameras on)")
        for cam in frame.cameras:
            if not cam.token:
                raise ValueError(f"{where} camera {cam.name or '?'} has no token to name its superpixel file")
            if cam.token in seen:
                continue
            seen.add(cam.token)
            segments = segmenter.segment(cam.image, cam)
            for g in generators:
                m = generator_map(segments, g)
                path = superpixel_path(out, g, cam.token)
                save_superpixels(path, m.ids, durable=False)
                if m.info is not None:
                    atomic_write_text(path.with_suffix(".json"), json.dumps(m.info) + "\n")
                written[g] += 1
    return written


def sample_splits(splits: Mapping[str, int]) -> list[str]:
    """The splits of an official sample that together hold every frame once (``all`` when the reader has it)."""
    if "all" in splits:
        return ["all"]
    return [s for s in splits if not s.endswith("_labelled") and not s.startswith(("pretrain", "mini_"))]


def write_superpixel_samples(samples: Mapping[str, Any], out: str | os.PathLike,
                             keys: Sequence[str] = SAMPLE_DATASETS,
                             generators: Sequence[str] = GENERATORS) -> dict[str, Path]:
    """Maps of every generator (:func:`write_generator_maps`) for every camera image of the official-layout samples
    ``samples`` (``{key: OfficialSample}`` from :func:`largead.data.export.write_official_samples`) named by ``keys``,
    each opened with its cameras on, every split. Returns ``{key: superpixel root}`` (``out/<key>``: pass it as the
    source's ``root``, e.g. a config's ``data.N.superpixels.root``)."""
    from largead.data import get_dataset

    roots = {}
    for key in keys:
        if key not in samples:
            raise KeyError(f"no official sample {key!r}; have {sorted(samples)}")
        s = samples[key]
        options = {**s.options, "cameras": True}
        root = Path(out) / key
        for split in sample_splits(s.splits):
            ds = get_dataset(s.dataset, s.root, split, **options)
            write_generator_maps((ds[i] for i in range(len(ds))), root, generators, what=f"{key} {split}")
        roots[key] = root
    return roots
