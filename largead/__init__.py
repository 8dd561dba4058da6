"""largead: LargeAD LiDAR pretraining from vision foundation models, and a zoo of its MinkUNet encoders.

    >>> from largead import LargeADEncoder
    >>> encoder = LargeADEncoder.from_pretrained("largead/minkunet34-seem-nkw")   # doctest: +SKIP
    >>> feats = encoder.embed(points)          # (N, 4) x, y, z, intensity -> (N, 64)  # doctest: +SKIP

Heavy submodules are imported on first use, so ``import largead`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "LargeADEncoder": "largead.models.encoder",
    "LargeADConfig": "largead.models.encoder",
    "load_official_checkpoint": "largead.models.convert",
    "list_models": "largead.zoo",
    "model_info": "largead.zoo",
    "get_dataset": "largead.data",
    "list_datasets": "largead.data",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'largead' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
