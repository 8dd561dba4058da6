"""Downstream segmentation head on a pretrained (or randomly initialised) LargeAD encoder.

SLidR's downstream protocol replaces the pretrained ``final`` layer (the 96 -> 64 projection head of pretraining)
by a new 1x1 classifier ``96 -> C`` with bias, in MinkowskiEngine's layout (``final.kernel`` ``[96, C]``,
``final.bias`` ``[1, C]``), so a fine-tuned model is still a plain MinkUNet whose state dict loads into ME.

Two modes:

- ``linear_probe``: every backbone parameter is frozen and the backbone stays in eval mode (BatchNorm uses and keeps
  its running statistics) even when ``.train()`` is called on the wrapper; only ``final`` learns.
- ``finetune``: the whole network learns; :meth:`SegmentationModel.param_groups` gives the backbone and the head
  separate learning rates (SLidR nuScenes: 0.02 backbone, 2.0 head).

Outputs have exactly ``C`` channels (training ids ``0 .. C-1``; ignored points carry label -1 and have no channel),
so no ignore channel has to be forced out of the argmax.

A fine-tuned model is saved as a :class:`~largead.models.encoder.LargeADEncoder` folder whose config has
``out_channels = C`` and ``normalize_output = False`` (so ``from_pretrained`` rebuilds it and ``forward_batch``
returns logits), plus ``segmentation.json`` with the class names, dataset and mode.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from largead.fileio import atomic_write_json
from largead.sparse import Conv3d, VoxelBatch, VoxelGrid

__all__ = ["MODES", "SEGMENTATION_FILE", "SegmentationModel", "check_encoder_matches", "set_bn_momentum"]

MODES = ("linear_probe", "finetune")
SEGMENTATION_FILE = "segmentation.json"
DECODER_CHANNELS = 96  # MinkUNet-14/18/34's last decoder width (PLANES[-1]); read from the encoder when it says


def _config_dict(config: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    return dict(vars(config))


def check_encoder_matches(
    config: Any, grid: VoxelGrid, in_channels: int, source: str = "checkpoint", target: str = "dataset config"
) -> None:
    """Refuse an encoder whose voxelisation or number of input channels differs from what the data will feed it.

    ``config`` is the encoder's config (``voxel_size``, ``cylindrical``, ``in_channels``); ``grid`` and
    ``in_channels`` come from the downstream dataset configuration. Raises ``ValueError`` naming both sides
    (as SLidR asserts on voxel size and the cylindrical flag when loading a checkpoint).
    """
    cfg = _config_dict(config)
    problems = []
    voxel = tuple(float(v) for v in cfg["voxel_size"])
    if voxel != tuple(grid.voxel_size) or bool(cfg["cylindrical"]) != grid.cylindrical:
        problems.append(
            f"voxelisation: {source} has voxel_size={voxel}, cylindrical={bool(cfg['cylindrical'])} but {target} "
            f"has voxel_size={tuple(grid.voxel_size)}, cylindrical={grid.cylindrical}"
        )
    if int(cfg["in_channels"]) != int(in_channels):
        problems.append(f"input channels: {source} has in_channels={cfg['in_channels']} "
                        f"(feature_mode={cfg.get('feature_mode')!r}) but {target} gives {in_channels}")
    if problems:
        raise ValueError("encoder does not match the data: " + "; ".join(problems))


def set_bn_momentum(module: nn.Module, momentum: float, block_momentum: float | None = None) -> int:
    """Set BatchNorm momenta (torch's convention) on a MinkUNet; returns how many BatchNorms were changed.

    SLidR passes ``bn_momentum`` only to the stem, encoder/decoder transition and ``downsample`` BatchNorms; the
    two BatchNorms inside each residual block keep 0.1. ``block_momentum`` sets those (key pattern
    ``blockK.i.normJ``, ME's names for them); ``None`` gives them ``momentum`` too.
    """
    count = 0
    for name, m in module.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            inner = re.search(r"(^|\.)block\d+\.\d+\.norm\d+(\.|$)", name) is not None
            m.momentum = float(block_momentum if inner and block_momentum is not None else momentum)
            count += 1
    return count


class SegmentationModel(nn.Module):
    """Encoder + a fresh 1x1 classifier ``96 -> num_classes`` in place of the encoder's ``final``.

    ``encoder``: a :class:`~largead.models.encoder.LargeADEncoder` (or any MinkUNet exposing ``final``,
    ``decoder_forward(batch) -> (M, 96)`` and ``config``); the wrapper takes ownership and replaces its ``final``.
    Set ``new_head=False`` to keep an existing classifier (loading a fine-tuned model whose ``final`` already has
    ``num_classes`` outputs).
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        mode: str = "linear_probe",
        class_names: Sequence[str] | None = None,
        new_head: bool = True,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        for attr in ("final", "decoder_forward", "config"):
            if not hasattr(encoder, attr):
                raise TypeError(f"encoder {type(encoder).__name__} has no {attr!r}; expected a LargeADEncoder")
        self.mode = mode
        self.num_classes = int(num_classes)
        self.class_names = tuple(class_names) if class_names is not None else None
        self.encoder = encoder
        width = int(getattr(encoder, "decoder_channels", DECODER_CHANNELS))
        if new_head:
            ops = getattr(encoder, "_ops", None)  # the encoder's layer backend (torch or MinkowskiEngine)
            head = (ops.conv(width, self.num_classes, 1, bias=True) if ops is not None
                    else Conv3d(width, self.num_classes, kernel_size=1, bias=True))
            encoder.final = head.to(next(encoder.parameters()).device)
        else:
            kernel = getattr(encoder.final, "kernel", None)
            if kernel is None or tuple(kernel.shape) != (width, self.num_classes):
                raise ValueError(f"encoder.final has kernel shape {None if kernel is None else tuple(kernel.shape)}, "
                                 f"expected ({width}, {self.num_classes}) for new_head=False")
        for name, p in encoder.named_parameters():  # linear probe: only the classifier learns
            p.requires_grad_(mode == "finetune" or name.startswith("final."))
        self.train(self.training)

    @property
    def head(self) -> nn.Module:
        """The classifier (the encoder's ``final``)."""
        return self.encoder.final

    def train(self, mode: bool = True) -> SegmentationModel:
        """As ``nn.Module.train``, except that in ``linear_probe`` mode the backbone always stays in eval mode."""
        super().train(mode)
        if self.mode == "linear_probe":
            self.encoder.eval()
            self.encoder.final.train(mode)
        return self

    def forward(self, batch: VoxelBatch) -> torch.Tensor:
        """Per-voxel logits (M, num_classes) of a voxelised batch."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.mode == "finetune"):
            feats = self.encoder.decoder_forward(batch)  # linear probe: no graph through the frozen backbone
        final = self.encoder.final
        return feats @ final.kernel + final.bias

    def point_logits(self, batch: VoxelBatch) -> torch.Tensor:
        """Per-point logits (N, num_classes): voxel logits mapped back through ``batch.inverse``."""
        return self(batch).index_select(0, batch.inverse)

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.final.parameters())

    def backbone_parameters(self) -> list[nn.Parameter]:
        head = {id(p) for p in self.head_parameters()}
        return [p for p in self.encoder.parameters() if id(p) not in head]

    def param_groups(self, lr: float, head_lr: float | None = None, weight_decay: float = 0.0) -> list[dict]:
        """Optimiser parameter groups: ``[backbone (lr), head (head_lr)]``; the head alone in ``linear_probe``."""
        head_lr = lr if head_lr is None else head_lr
        groups = [{"params": self.head_parameters(), "lr": head_lr, "weight_decay": weight_decay, "name": "head"}]
        if self.mode == "finetune":
            groups.insert(0, {"params": self.backbone_parameters(), "lr": lr, "weight_decay": weight_decay,
                              "name": "backbone"})
        return groups

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return (p for p in self.parameters() if p.requires_grad)

    # ----------------------------------------------------------------------------------------------- save / load
    def segmentation_metadata(self, **extra: Any) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "class_names": list(self.class_names or []), "mode": self.mode,
                **extra}

    def save_pretrained(self, folder: str | os.PathLike, **metadata: Any) -> Path:
        """Write the model as a LargeADEncoder folder (``out_channels = C``, unnormalised) + ``segmentation.json`` +
        a segmentation model card (:func:`largead.cards.render_card`); ``metadata`` (``dataset``,
        ``label_fraction``, ``pretrained``...) goes into ``segmentation.json`` and the card."""
        from largead.cards import render_card
        from largead.models.encoder import (
            LargeADEncoder,  # local: encoder imports heavy hub machinery
        )

        folder = Path(folder)
        cfg = dataclasses.replace(self.encoder.config, out_channels=self.num_classes, normalize_output=False)
        export = LargeADEncoder(cfg)
        export.load_state_dict(self.encoder.state_dict(), strict=True)
        meta = self.segmentation_metadata(**metadata)
        export.card_text = str(render_card(None, config=cfg.to_dict(), segmentation=meta))  # not the encoder's card
        export.save_pretrained(folder)
        atomic_write_json(folder / SEGMENTATION_FILE, meta)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, mode: str | None = None) -> SegmentationModel:
        """Load a model written by :meth:`save_pretrained` (keeps its classifier)."""
        from largead.models.encoder import LargeADEncoder

        folder = Path(folder)
        meta_path = folder / SEGMENTATION_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} not found: {folder} is not a segmentation checkpoint "
                                    f"(written by SegmentationModel.save_pretrained)")
        meta = json.loads(meta_path.read_text())
        encoder = LargeADEncoder.from_pretrained(str(folder))
        names = meta.get("class_names") or None
        return cls(encoder, int(meta["num_classes"]), mode=mode or meta.get("mode", "finetune"), class_names=names,
                   new_head=False)


