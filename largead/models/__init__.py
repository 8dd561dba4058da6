"""Models: the MinkUNet LiDAR backbone, the Hub-ready ``LargeADEncoder``, checkpoint conversion, optional
MinkowskiEngine twin (and, from other modules, 2D teachers and heads). Submodules are imported on first use."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MinkUNet": "largead.models.minkunet",
    "MINKUNET_VARIANTS": "largead.models.minkunet",
    "LargeADEncoder": "largead.models.encoder",
    "LargeADConfig": "largead.models.encoder",
    "CheckpointMismatchError": "largead.models.encoder",
    "WeightsNotAvailableError": "largead.models.encoder",
    "load_official_checkpoint": "largead.models.convert",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'largead.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
