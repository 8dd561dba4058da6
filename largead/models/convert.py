"""Load SLidR / Seal style MinkowskiEngine checkpoints (``.pt``) into a :class:`~largead.LargeADEncoder`.

Layouts accepted (facts from valeoai/SLidR ``pretrain/lightning_trainer.py`` and ``downstream/model_builder.py``):

- SLidR pretraining ``model.pt``: ``{"model_points": state, "model_images": ..., "epoch": int, "config": dict}``;
- PyTorch Lightning checkpoints: ``{"state_dict": state, ...}`` (keys usually prefixed ``model.``);
- a bare state dict.

Key prefixes ``module.``, ``model.``, ``model_points.`` and ``encoder.`` are stripped in any nesting and order
(SLidR strips each once, in a fixed order); keys under ``model_images.`` (the 2D branch of a pretraining
checkpoint's Lightning ``state_dict``) are not part of the LiDAR encoder and are left out. Everything else must match
the architecture exactly (missing, unexpected or mis-shaped tensors raise
:class:`~largead.models.encoder.CheckpointMismatchError`).

Voxelisation: SLidR's ``config`` stores ``voxel_size`` (one number: the size in every Cartesian axis, or in rho and z
for cylindrical coordinates, whose angular bin is always 1 degree) and ``cylindrical_coordinates``. When the file has
them they become the encoder's grid, and when a ``config`` is also requested the two must agree (SLidR asserts the
same when fine-tuning). Input and output channels and the MinkUNet depth are inferred from the tensors.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from largead.models.encoder import (
    CheckpointMismatchError,
    LargeADConfig,
    LargeADEncoder,
    check_state_dict,
    load_state_dict_strict,
)
from largead.models.minkunet import MINKUNET_VARIANTS, MinkUNet, state_dict_shapes

PREFIXES = ("module.", "model.", "model_points.", "encoder.")
IMAGE_BRANCH_PREFIX = "model_images."
_FEATURE_MODE_FOR_CHANNELS = {1: "intensity", 4: "xyz_intensity"}


def strip_prefixes(state: Mapping[str, Any], prefixes: tuple[str, ...] = PREFIXES) -> dict[str, Any]:
    """Remove any sequence of ``prefixes`` from the start of every key; fail if two keys collide."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        k = key
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        if k in out:
            raise CheckpointMismatchError(f"keys collide after stripping prefixes {prefixes}: {key!r} -> {k!r}")
        out[k] = value
    return out


def extract_state_dict(obj: Any, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """``(encoder state dict with prefixes stripped, stored SLidR config or None)`` from a loaded checkpoint."""
    if not isinstance(obj, Mapping):
        raise CheckpointMismatchError(f"{source}: expected a dict, got {type(obj).__name__}")
    stored = obj.get("config") if isinstance(obj.get("config"), Mapping) else None
    if "model_points" in obj:
        state, where = obj["model_points"], "model_points"
    elif "state_dict" in obj:
        state, where = obj["state_dict"], "state_dict"
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, where = obj, "top level"
    else:
        keys = sorted(str(k) for k in obj)[:12]
        raise CheckpointMismatchError(f"{source}: no 'model_points' or 'state_dict' entry and not a bare state dict "
                                      f"(top-level keys: {keys})")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointMismatchError(f"{source}: '{where}' is not a dict of tensors")
    state = strip_prefixes(state)
    state = {k: v for k, v in state.items() if not k.startswith(IMAGE_BRANCH_PREFIX)}
    if not state:
        raise CheckpointMismatchError(f"{source}: '{where}' holds no encoder tensors")
    return state, (dict(stored) if stored is not None else None)


def slidr_grid(stored: Mapping[str, Any], source: str = "checkpoint") -> tuple[tuple[float, float, float], bool] | None:
    """``(voxel_size, cylindrical)`` in largead's convention from a SLidR config, or None if it has neither key."""
    if "voxel_size" not in stored and "cylindrical_coordinates" not in stored:
        return None
    if "voxel_size" not in stored or "cylindrical_coordinates" not in stored:
        raise ValueError(f"{source}: stored config has only one of voxel_size / cylindrical_coordinates")
    v, cyl = stored["voxel_size"], bool(stored["cylindrical_coordinates"])
    if isinstance(v, (list, tuple)):
        if len(v) != 3:
            raise ValueError(f"{source}: stored voxel_size {v!r} is neither a number nor three numbers")
        size = tuple(float(x) for x in v)
    else:
        size = (float(v), 1.0, float(v)) if cyl else (float(v),) * 3
    return size, cyl  # type: ignore[return-value]


def infer_backbone(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> tuple[str, int, int]:
    """``(variant, in_channels, out_channels)`` whose architecture has exactly the keys and shapes of ``state``."""
    for key in ("conv0p1s1.kernel", "final.kernel"):
        if key not in state:
            raise CheckpointMismatchError(f"{source}: no {key!r}; not a MinkUNet (Res16UNet) state dict "
                                          f"(first keys: {list(state)[:8]})")
    kernel0, final = state["conv0p1s1.kernel"], state["final.kernel"]
    if kernel0.ndim != 3 or final.ndim != 2:
        raise CheckpointMismatchError(f"{source}: conv0p1s1.kernel {list(kernel0.shape)} / final.kernel "
                                      f"{list(final.shape)} are not MinkowskiEngine kernels ([K, C_in, C_out] / [C_in, C_out])")
    c_in, c_out = int(kernel0.shape[1]), int(final.shape[1])
    got = {k: tuple(v.shape) for k, v in state.items()}
    best, best_score = "minkunet34", -1
    for variant in MINKUNET_VARIANTS:
        with torch.device("meta"):
            expected = state_dict_shapes(MinkUNet(c_in, c_out, variant))
        if expected == got:
            return variant, c_in, c_out
        score = sum(1 for k, s in expected.items() if got.get(k) == s) - len(set(got) - set(expected))
        if score > best_score:
            best, best_score = variant, score
    with torch.device("meta"):
        closest = MinkUNet(c_in, c_out, best)
    check_state_dict(closest, state, f"{source} (closest architecture: {best})")
    raise AssertionError("unreachable: check_state_dict found no difference")  # pragma: no cover


def load_official_checkpoint(path: str | os.PathLike[str], config: LargeADConfig | None = None, *,
                             weights_only: bool = True) -> LargeADEncoder:
    """Read a SLidR/Seal MinkUNet checkpoint and return a :class:`LargeADEncoder` holding its weights (eval mode).

    Args:
        path: the ``.pt``/``.pth``/``.ckpt`` file.
        config: the configuration to build; by default one is derived from the file: the backbone, in/out channels
            and feature mode from the tensor shapes, the grid from the stored SLidR config (else SLidR's
            (0.1 m, 1 deg, 0.1 m) cylindrical grid), ``normalize_output`` from the stored ``normalize_features``
            (else True only for a 64-channel head, the pretraining projection).
        weights_only: passed to ``torch.load``; set False only for files you trust that hold pickled objects.

    Raises:
        FileNotFoundError; CheckpointMismatchError (unknown layout, missing/unexpected/mis-shaped tensors);
        ValueError when the file's voxel size or cylindrical flag differs from ``config``'s.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as err:
        first = " ".join(str(err).split())[:300]
        raise CheckpointMismatchError(f"{path}: cannot be read with weights_only={weights_only} ({first}); if you "
                                      "trust the file, pass weights_only=False") from None
    except Exception as err:  # noqa: BLE001 - a text file, a truncated zip, ...: not a checkpoint, say so
        raise CheckpointMismatchError(f"{path}: not a PyTorch checkpoint (torch.load failed: {type(err).__name__}: "
                                      f"{' '.join(str(err).split())[:200]})") from None
    state, stored = extract_state_dict(obj, str(path))
    stored_grid = slidr_grid(stored, str(path)) if stored else None
    if config is None:
        variant, c_in, c_out = infer_backbone(state, str(path))
        if c_in not in _FEATURE_MODE_FOR_CHANNELS:
            raise CheckpointMismatchError(f"{path}: {c_in} input channels; largead knows feature modes for "
                                          f"{sorted(_FEATURE_MODE_FOR_CHANNELS)} channels only")
        voxel_size, cylindrical = stored_grid if stored_grid else ((0.1, 1.0, 0.1), True)
        normalize = bool(stored["normalize_features"]) if stored and "normalize_features" in stored else c_out == 64
        config = LargeADConfig(backbone=variant, in_channels=c_in, out_channels=c_out,
                               feature_mode=_FEATURE_MODE_FOR_CHANNELS[c_in], voxel_size=voxel_size,
                               cylindrical=cylindrical, normalize_output=normalize)
        if stored and "bn_momentum" in stored:
            config = replace(config, bn_momentum=float(stored["bn_momentum"]))
    elif stored_grid is not None and (tuple(config.voxel_size), config.cylindrical) != stored_grid:
        raise ValueError(f"{path}: the checkpoint was trained with voxel_size={stored_grid[0]}, "
                         f"cylindrical={stored_grid[1]} but the requested config has voxel_size={config.voxel_size}, "
                         f"cylindrical={config.cylindrical}")
    encoder = LargeADEncoder(config)
    load_state_dict_strict(encoder, state, str(path))
    return encoder.eval()


__all__ = [
    "PREFIXES",
    "extract_state_dict",
    "infer_backbone",
    "load_official_checkpoint",
    "slidr_grid",
    "strip_prefixes",
]
