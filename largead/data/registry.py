"""Dataset registry: ``get_dataset(name, root, split, **options)`` and ``list_datasets()``.

Every reader subclasses :class:`LidarDataset` and registers itself with :func:`register_dataset`. Readers are lazy:
the constructor builds an index (file lists, tables), ``frame(i)`` loads one sweep.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import ClassVar

from largead.data.frame import IGNORE_INDEX, Frame

_REGISTRY: dict[str, type[LidarDataset]] = {}

# Modules that register readers on import; get_dataset/list_datasets import them on first use.
_READER_MODULES = (
    "largead.data.synthetic",
    "largead.data.readers.nuscenes",
    "largead.data.readers.semantickitti",
    "largead.data.readers.waymo",
    "largead.data.readers.kitti_family",
    "largead.data.readers.nuscenes_c",
)


class LidarDataset:
    """Base class of every reader.

    Class attributes each reader declares: ``name``, ``class_names`` (training ids ``0..C-1`` in order),
    ``ignore_index`` (always :data:`IGNORE_INDEX`), ``has_cameras`` (usable for image-to-LiDAR pretraining),
    ``temporal`` (frames of a sequence are ordered in time, so ``next_frame`` is meaningful), ``splits``.
    """

    name: ClassVar[str] = ""
    class_names: ClassVar[tuple[str, ...]] = ()
    ignore_index: ClassVar[int] = IGNORE_INDEX
    has_cameras: ClassVar[bool] = False
    temporal: ClassVar[bool] = False
    splits: ClassVar[tuple[str, ...]] = ("train", "val")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def frame(self, i: int) -> Frame:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, i: int) -> Frame:
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.name}: frame index {i} out of range for {len(self)} frames")
        return self.frame(i % len(self))

    def sequence_of(self, i: int) -> tuple[str, int]:
        """(sequence id, position within the sequence) of frame ``i``; readers override with an index lookup."""
        f = self.frame(i)
        return f.sequence, f.index

    def next_frame(self, i: int, n: int = 1) -> Frame | None:
        """The frame ``n`` sweeps after frame ``i`` in the same sequence, or ``None`` if there is none."""
        j = self.next_index(i, n)
        return None if j is None else self.frame(j)

    def next_index(self, i: int, n: int = 1) -> int | None:  # pragma: no cover - readers override
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, frames={len(self)})"


def register_dataset(name: str) -> Callable[[type[LidarDataset]], type[LidarDataset]]:
    """Class decorator: make a reader available as ``get_dataset(name, ...)``."""

    def wrap(cls: type[LidarDataset]) -> type[LidarDataset]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"dataset name {name!r} is already registered by {_REGISTRY[name].__name__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _load_readers() -> None:
    for mod in _READER_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:  # a reader module not written yet, or an optional dependency
            if err.name != mod:
                raise


def list_datasets() -> list[str]:
    """Names accepted by :func:`get_dataset`, sorted."""
    _load_readers()
    return sorted(_REGISTRY)


def dataset_class(name: str) -> type[LidarDataset]:
    _load_readers()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(_REGISTRY))}.{hint}")
    return _REGISTRY[name]


def reader_options(name: str) -> list[str] | None:
    """The options (keyword arguments besides ``root`` and ``split``) that reader ``name`` takes, or ``None`` when
    it takes open-ended ``**options`` and checks them itself (the synthetic world)."""
    import inspect

    params = inspect.signature(dataset_class(name).__init__).parameters
    if any(v.kind is inspect.Parameter.VAR_KEYWORD for v in params.values()):
        return None
    return [p for p, v in params.items() if p not in ("self", "root", "split")
            and v.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]


def get_dataset(name: str, root: str | None = None, split: str = "train", **options) -> LidarDataset:
    """Open dataset ``name`` at ``root`` (ignored by ``synthetic``) for ``split``; an option the reader does not
    take is an error naming it and the reader's options (see :func:`reader_options`)."""
    import difflib

    cls = dataset_class(name)
    if split not in cls.splits:
        raise ValueError(f"dataset {name!r} has no split {split!r}; available: {', '.join(cls.splits)}")
    known = reader_options(name)
    unknown = [] if known is None else sorted(set(options) - set(known))
    if unknown:
        close = {u: difflib.get_close_matches(u, known, n=1) for u in unknown}
        hint = "".join(f" ({u!r}: did you mean {c[0]!r}?)" for u, c in close.items() if c)
        raise ValueError(f"dataset {name!r} has no option(s) {unknown}{hint}; its options: {', '.join(known)}")
    return cls(root=root, split=split, **options)
