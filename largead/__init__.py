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
PAPER_URL = "https://arxiv.org/abs/2501.04005"  # LargeAD (Kong et al., 2025)
REPO_URL = "https://github.com/largead/largead"  # this project, shown in pushed model cards
DOCS_URL = f"{REPO_URL}#readme"

_LAZY = {
    "LargeADEncoder": "largead.models.encoder",
    "LargeADConfig": "largead.models.encoder",
    "load_official_checkpoint": "largead.models.convert",
    "create_encoder": "largead.zoo",
    "list_models": "largead.zoo",
    "model_info": "largead.zoo",
    "get_dataset": "largead.data",
    "list_datasets": "largead.data",
}

__all__ = ["DOCS_URL", "PAPER_URL", "REPO_URL", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'largead' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
