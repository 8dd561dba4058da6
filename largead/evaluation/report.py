"""Evaluation results -> JSON file. (Results go into a model card with :func:`largead.cards.update_card_results`.)"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from largead.fileio import atomic_write_text

__all__ = ["write_results"]


def write_results(path: str | os.PathLike, results: Mapping[str, Any]) -> Path:
    """Write ``results`` as indented JSON, atomically (NaN written as ``null``)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, Mapping):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    path = Path(path)
    atomic_write_text(path, json.dumps(clean(results), indent=2, allow_nan=False) + "\n")
    return path
