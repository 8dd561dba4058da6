"""Frozen 2D teachers: a pretrained image backbone (frozen, eval mode) + a trainable 1x1 head to 64 dims, bilinear
upsampling back to the image, L2 normalisation. The per-pixel features are what superpixel pooling distils into the
LiDAR network.

Backbones (``transformers`` modules):

- DINOv2 ViT-S/B/L, patch 14 (LargeAD, SuperFlow): ``Dinov2Model`` (or ``Dinov2WithRegistersModel``) patch tokens,
  upsampled by the patch size. Weights from a Hub id / local folder (``facebook/dinov2-small|base|large``).
- ResNet-50 (SLidR): SLidR's teacher is MoCo v2 (800 epochs) ResNet-50, dilated.
  :meth:`ImageTeacher.from_moco_checkpoint` reads the file users download from the MoCo repository
  (``moco_v2_800ep_pretrain.pth.tar``, :data:`MOCO_V2_800EP_URL`; the query encoder's ``module.encoder_q.*``
  tensors in torchvision's layout, mapped onto ``ResNetModel`` by :func:`resnet_state_dict_from_torchvision`), as
  SLidR's ``model/image_model.py`` ``adapt_weights`` does. The
  ``resnet50`` alias needs that file: there is no fallback to other weights (``microsoft/resnet-50`` on the Hub is
  supervised ImageNet, a different teacher; it loads only when named explicitly). :func:`dilate_resnet` applies
  SLidR's dilation (torchvision's ``replace_stride_with_dilation=[True, True, True]``; output stride 4, upsampled x4).
- Random weights for tests and dry runs: ``from_pretrained_backbone(name, random_init=True)`` builds the named
  architecture (:data:`DINOV2_ARCHITECTURES`, :func:`resnet50_config`) without downloading anything, seeded
  (:data:`RANDOM_INIT_SEED`, the same weights everywhere); the teacher records it (``teacher.random_init``,
  ``teacher.weights``) so a run's config and card can say so.

As in SLidR, the head is ``Conv2d(C, 64, 1)`` followed by bilinear upsampling (``align_corners=True``) and
``F.normalize``; inputs are uint8 images scaled to [0, 1] and normalised with ImageNet mean/std inside
:meth:`ImageTeacher.forward`.

DINOv2 features as SuperFlow (``superflow/models/backbones/vit.py``, ``feat='x_pre_norm'``) and ScaLR
(``models/image_teacher.py``, ``configs/pretrain/WI_768_pretrain.yaml``: ``feat: "x_pre_norm"``) take them: the
patch tokens of the **last block, before the final LayerNorm** (``vit_features="pre_norm"``, the default here;
``"post_norm"`` gives ``last_hidden_state``), class and register tokens dropped, ImageNet mean/std, inputs whose
sides are multiples of 14 (both use 224 x 448). Where ours differ, and why:

- Input size: both references *resize the whole camera image* to 224 x 448 (SuperFlow's ``ResizedCrop`` with
  ``crop_center=True``, ScaLR's ``resize_im``); here the image is SLidR's random resized crop to the configured
  ``crop_size`` (the pretraining configs decide; use a multiple of 14 such as 224 x 448 for DINOv2 teachers). An input
  whose sides are not multiples of 14 is resized (bilinear) to the nearest multiples of 14, as the references resize,
  and the features are upsampled back to the input's size; ResNet inputs are instead zero-padded at the bottom/right
  to a multiple of the stride and cropped back (convolutions handle borders by zero padding anyway).
- Position embeddings for a non-square grid: ``transformers`` interpolates them bicubically to the exact grid
  (``Dinov2Embeddings.interpolate_pos_encoding``); the DINOv2 code SuperFlow and ScaLR copy scales by
  ``(grid + 0.1) / 37``. The two differ slightly in value, not in layout.
- The head: ScaLR distils the raw (upsampled) DINOv2 features without a head; SuperFlow and SLidR learn a 1x1 head to
  64 dims, as here.

:class:`SyntheticTeacher` stands in for a vision foundation model on the synthetic world (no pretrained weights can
be downloaded there): a small conv net trained once on the renderer's images and semantic masks, cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from largead.fileio import CorruptFileError, atomic_path, clean_stale_temporaries

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TEACHER_ALIASES = {
    "vit-s": "facebook/dinov2-small",
    "vit-b": "facebook/dinov2-base",
    "vit-l": "facebook/dinov2-large",
    "dinov2-vits14": "facebook/dinov2-small",
    "dinov2-vitb14": "facebook/dinov2-base",
    "dinov2-vitl14": "facebook/dinov2-large",
}
"""Short names of the DINOv2 teachers accepted by :meth:`ImageTeacher.from_pretrained_backbone` -> Hub ids. The
ResNet-50 teacher (``resnet50``) is not a Hub id: it is SLidR's MoCo v2 checkpoint, given by path."""

DINOV2_ARCHITECTURES = {
    "facebook/dinov2-small": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6},
    "facebook/dinov2-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12},
    "facebook/dinov2-large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16},
}
"""Published DINOv2 ViT-S/B/L sizes (patch 14, MLP ratio 4, LayerScale 1.0, LayerNorm eps 1e-6, 518-pixel position
grid), as in the DINOv2 code SuperFlow vendors (``superflow/models/backbones/dinov2/dinov2_vision_transformer.py``:
``vit_small`` 384/12/6, ``vit_base`` 768/12/12, ``vit_large`` 1024/24/16, ``dinov2_vits14`` ``img_size=518``)."""

RESNET50 = "resnet50"
RANDOM_INIT_SEED = 0
"""Seed of ``random_init`` teachers (the global RNG is left as it was): every process and every resumed run builds the
same random backbone, which training checkpoints do not store (:class:`largead.pretrain.model.PretrainModel`)."""
MOCO_V2_800EP_URL = ("https://dl.fbaipublicfiles.com/moco/moco_checkpoints/moco_v2_800ep/"
                     "moco_v2_800ep_pretrain.pth.tar")
"""Where SLidR's teacher weights come from (facebookresearch/moco README; SLidR ``model/image_model.py``)."""


def dinov2_config(name: str) -> Any:
    """``Dinov2Config`` of a DINOv2 teacher (alias or Hub id of :data:`DINOV2_ARCHITECTURES`), published sizes."""
    from transformers import Dinov2Config

    hub = TEACHER_ALIASES.get(name, name)
    if hub not in DINOV2_ARCHITECTURES:
        raise ValueError(f"no DINOv2 architecture named {name!r}; known: {sorted(TEACHER_ALIASES)}")
    return Dinov2Config(**DINOV2_ARCHITECTURES[hub], mlp_ratio=4, patch_size=14, image_size=518, layerscale_value=1.0,
                        layer_norm_eps=1e-6, qkv_bias=True, use_swiglu_ffn=False, hidden_act="gelu")


def resnet50_config() -> Any:
    """``ResNetConfig`` of torchvision's ResNet-50 (v1.5: stride on the 3x3 conv), the architecture MoCo v2 trains."""
    from transformers import ResNetConfig

    return ResNetConfig(num_channels=3, embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3],
                        layer_type="bottleneck", hidden_act="relu", downsample_in_first_stage=False,
                        downsample_in_bottleneck=False)


def load_moco_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The query encoder of a MoCo checkpoint (``moco_v2_800ep_pretrain.pth.tar``) as ``ResNetModel`` tensors.

    The file is what facebookresearch/moco's ``main_moco.py`` saves (``{"epoch", "arch", "state_dict",
    "optimizer"}``, ``state_dict`` of the DDP-wrapped ``MoCo`` module: ``module.encoder_q.*``, ``module.encoder_k.*``,
    ``module.queue``, ``module.queue_ptr``); like its ``main_lincls.py`` and SLidR's ``adapt_weights``, only
    ``module.encoder_q.*`` without the projection ``fc`` is kept. Read with ``torch.load(weights_only=True)`` (tensors
    and plain containers only). A missing file raises ``FileNotFoundError`` saying where to download it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"MoCo v2 checkpoint not found: {path}. SLidR's ResNet-50 teacher is MoCo v2 (800 epochs): download "
            f"moco_v2_800ep_pretrain.pth.tar from {MOCO_V2_800EP_URL} (facebookresearch/moco) and give its path "
            "(teacher options: checkpoint: /path/to/moco_v2_800ep_pretrain.pth.tar)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle / zip errors of a file that is not a torch checkpoint
        raise ValueError(f"{path}: not a readable MoCo checkpoint (torch.load(weights_only=True) failed: "
                         f"{err})") from err
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        found = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path}: a MoCo checkpoint holds a 'state_dict' mapping; found {found}")
    prefix = "module.encoder_q."
    if not any(k.startswith(prefix) for k in state):
        raise ValueError(f"{path}: no '{prefix}*' tensors in its state_dict (first keys: {sorted(state)[:5]}); "
                         "expected the query encoder of facebookresearch/moco's main_moco.py")
    query = {k: v for k, v in state.items() if k.startswith(prefix) and not k.startswith(prefix + "fc.")}
    return resnet_state_dict_from_torchvision(query, prefix=prefix)


def dilate_resnet(model: nn.Module) -> nn.Module:
    """Turn a ``transformers`` bottleneck ``ResNetModel`` into SLidR's dilated ResNet (output stride 4), in place.

    torchvision's ``replace_stride_with_dilation=[True, True, True]``: in stages 2, 3, 4 the stride-2 convolutions of
    the first block become stride 1; that block's 3x3 conv keeps the dilation reached so far (1, 2, 4) and the other
    3x3 convs of the stage use twice that (2, 4, 8); padding equals dilation. Weights are unchanged, so the dilated
    net's output sampled every 8th pixel equals the original net's output exactly.
    """
    cfg = model.config
    if getattr(cfg, "layer_type", "bottleneck") != "bottleneck":
        raise ValueError(f"dilation needs bottleneck blocks (ResNet-50 and up), got layer_type={cfg.layer_type!r}")
    # With ``downsample_in_bottleneck`` the stride sits on the first 1x1 conv, so the first block's 3x3 already runs on
    # the downsampled grid and takes the new dilation too.
    stride_on_3x3 = not getattr(cfg, "downsample_in_bottleneck", False)
    dilation = 1
    for stage in list(model.encoder.stages)[1:]:
        previous, dilation = dilation, dilation * 2
        for b, block in enumerate(stage.layers):
            for conv in (m for m in block.modules() if isinstance(m, nn.Conv2d)):
                if conv.stride != (1, 1):
                    conv.stride = (1, 1)
                if conv.kernel_size == (3, 3):
                    d = previous if (b == 0 and stride_on_3x3) else dilation
                    conv.dilation, conv.padding = (d, d), (d, d)
    model.output_stride = 4
    return model


def resnet_state_dict_from_torchvision(state_dict: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Map a torchvision-layout ResNet state dict (e.g. MoCo v2's ``module.encoder_q.*`` with ``prefix``
    ``"module.encoder_q."``) onto ``transformers`` ``ResNetModel`` keys; the ``fc`` classifier is dropped.

    torchvision ``conv1``/``bn1`` -> ``embedder.embedder.convolution``/``normalization``; ``layer{i}.{j}.conv{k}``/
    ``bn{k}`` -> ``encoder.stages.{i-1}.layers.{j}.layer.{k-1}.convolution``/``normalization``;
    ``layer{i}.{j}.downsample.0``/``.1`` -> ``...layers.{j}.shortcut.convolution``/``normalization``.
    Raises ``KeyError`` naming a key that fits none of these.
    """
    import re

    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        k = key[len(prefix):]
        if k.startswith("fc."):
            continue
        m = re.fullmatch(r"(conv1|bn1)\.(.+)", k)
        if m:
            part = "convolution" if m.group(1) == "conv1" else "normalization"
            out[f"embedder.embedder.{part}.{m.group(2)}"] = value
            continue
        m = re.fullmatch(r"layer(\d)\.(\d+)\.(conv|bn)(\d)\.(.+)", k)
        if m:
            part = "convolution" if m.group(3) == "conv" else "normalization"
            out[f"encoder.stages.{int(m.group(1)) - 1}.layers.{m.group(2)}.layer.{int(m.group(4)) - 1}."
                f"{part}.{m.group(5)}"] = value
            continue
        m = re.fullmatch(r"layer(\d)\.(\d+)\.downsample\.([01])\.(.+)", k)
        if m:
            part = "convolution" if m.group(3) == "0" else "normalization"
            out[f"encoder.stages.{int(m.group(1)) - 1}.layers.{m.group(2)}.shortcut.{part}.{m.group(4)}"] = value
            continue
        raise KeyError(f"torchvision ResNet key {key!r} has no ResNetModel counterpart")
    return out


class ImageTeacher(nn.Module):
    """Frozen image backbone + trainable 1x1 head to ``out_dim`` + upsampling to the image + L2 normalisation.

    ``backbone`` is a ``transformers`` ``Dinov2Model``/``Dinov2WithRegistersModel``/``ResNetModel`` or any module
    mapping normalised pixels (B, 3, H, W) to a feature map (B, C, H/stride, W/stride) (then give ``feature_dim`` and
    ``stride``). The backbone's parameters are frozen and it stays in eval mode even when the teacher is trained.
    Only ``head`` (``Conv2d(C, out_dim, 1)`` with bias) is trainable. ``vit_features``: DINOv2 tokens before
    (``"pre_norm"``, SuperFlow / ScaLR) or after (``"post_norm"``) the final LayerNorm.

    Provenance, for run configs and model cards: ``random_init`` (``True`` when the backbone has random weights) and
    ``weights`` (where they come from: ``"random"``, ``"moco_v2:<path>"``, ``"hub:<id>"``, ``"local:<folder>"``,
    ``"synthetic:<cache file>"``, or ``"given"`` for a module passed in).
    """

    def __init__(self, backbone: nn.Module, out_dim: int = 64, feature_dim: int | None = None,
                 stride: int | None = None, normalize_output: bool = True, vit_features: str = "pre_norm"):
        super().__init__()
        if vit_features not in ("pre_norm", "post_norm"):
            raise ValueError(f"vit_features must be 'pre_norm' or 'post_norm', got {vit_features!r}")
        self.vit_features = vit_features
        self.random_init = False
        self.weights = "given"
        cfg = getattr(backbone, "config", None)
        model_type = getattr(cfg, "model_type", None)
        if model_type in ("dinov2", "dinov2_with_registers"):
            self.kind, feature_dim, stride = "vit", cfg.hidden_size, cfg.patch_size
            self.num_prefix_tokens = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)
        elif model_type == "resnet":
            self.kind, feature_dim = "resnet", cfg.hidden_sizes[-1]
            stride = getattr(backbone, "output_stride", 32)
            self.num_prefix_tokens = 0
        else:
            if feature_dim is None or stride is None:
                raise ValueError(f"backbone {type(backbone).__name__} is not a known transformers model: give "
                                 "feature_dim= and stride= (it must map (B, 3, H, W) to (B, C, H/stride, W/stride))")
            self.kind, self.num_prefix_tokens = "module", 0
        self.backbone = backbone
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.feature_dim, self.stride, self.out_dim = int(feature_dim), int(stride), int(out_dim)
        self.normalize_output = normalize_output
        self.head = nn.Conv2d(self.feature_dim, self.out_dim, kernel_size=1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    # -- construction ------------------------------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Any, out_dim: int = 64, dilation: bool = True,
                    vit_features: str = "pre_norm") -> ImageTeacher:
        """Randomly initialised backbone from a ``transformers`` config (``Dinov2Config``, ``ResNetConfig``);
        the teacher records ``random_init = True``."""
        backbone = _backbone_from(config, None, dilation, local_files_only=True)
        teacher = cls(backbone, out_dim=out_dim, vit_features=vit_features)
        teacher.random_init, teacher.weights = True, "random"
        return teacher

    @classmethod
    def from_moco_checkpoint(cls, path: str | os.PathLike, out_dim: int = 64, dilation: bool = True,
                             config: Any = None) -> ImageTeacher:
        """SLidR's teacher: a ResNet (default :func:`resnet50_config`) with the query-encoder weights of a MoCo
        checkpoint file (:func:`load_moco_state_dict`), dilated (``dilation``). Every backbone tensor must come from
        the file (strict); a missing or mis-shaped one is an error naming it."""
        from transformers import ResNetModel

        state = load_moco_state_dict(path)
        model = ResNetModel(config if config is not None else resnet50_config())
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
        if missing or unexpected or wrong:
            raise ValueError(f"{path}: the MoCo weights do not fit the ResNet ({len(missing)} missing, e.g. "
                             f"{missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]}; {len(wrong)} of "
                             f"another shape, e.g. {wrong[:3]})")
        model.load_state_dict(state, strict=True)
        if dilation:
            dilate_resnet(model)
        teacher = cls(model.eval(), out_dim=out_dim)
        teacher.weights = f"moco_v2:{Path(path)}"
        return teacher

    @classmethod
    def from_pretrained_backbone(cls, name_or_path: str | os.PathLike, out_dim: int = 64, dilation: bool = True,
                                 local_files_only: bool | None = None, checkpoint: str | os.PathLike | None = None,
                                 random_init: bool = False, vit_features: str = "pre_norm") -> ImageTeacher:
        """The named teacher.

        - ``resnet50``: SLidR's MoCo v2 ResNet-50 from ``checkpoint`` (the downloaded ``.pth.tar``, see
          :meth:`from_moco_checkpoint`); without ``checkpoint`` an error says where to get it (never other weights).
        - ``vit-s`` / ``vit-b`` / ``vit-l`` (:data:`TEACHER_ALIASES`), a Hub id or a local folder: DINOv2 (or any
          supported ``transformers`` backbone) from the folder or the Hugging Face cache; with ``local_files_only``
          (default: the ``HF_HUB_OFFLINE`` setting) nothing is downloaded.
        - ``random_init=True`` (explicit opt-in, for tests and dry runs): the named architecture (``resnet50`` or a
          DINOv2 alias) with random weights, nothing read or downloaded; the teacher records ``random_init = True``.

        ``dilation`` applies SLidR's dilation to ResNets; ``vit_features`` see :class:`ImageTeacher`.
        """
        from transformers import AutoConfig, ResNetModel

        from largead.hub import local_files_only as hub_local_files_only

        raw = str(name_or_path)
        if random_init:
            if raw != RESNET50 and TEACHER_ALIASES.get(raw, raw) not in DINOV2_ARCHITECTURES:
                raise ValueError(f"random_init builds only the named teachers {[RESNET50, *TEACHER_ALIASES]}; got "
                                 f"{raw!r}")
            with torch.random.fork_rng(devices=[]):  # the same weights in every process and on every resume
                torch.manual_seed(RANDOM_INIT_SEED)
                if raw == RESNET50:
                    model = ResNetModel(resnet50_config())
                    if dilation:
                        dilate_resnet(model)
                    teacher = cls(model.eval(), out_dim=out_dim)
                else:
                    teacher = cls(_backbone_from(dinov2_config(raw), None, dilation, True).eval(), out_dim=out_dim,
                                  vit_features=vit_features)
            teacher.random_init, teacher.weights = True, "random"
            return teacher
        if raw == RESNET50:
            if checkpoint is None:
                raise FileNotFoundError(
                    "teacher 'resnet50' is SLidR's MoCo v2 (800 epochs) ResNet-50 and needs its checkpoint file: "
                    f"download moco_v2_800ep_pretrain.pth.tar from {MOCO_V2_800EP_URL} (facebookresearch/moco) and "
                    "give its path (teacher options: checkpoint: /path/to/moco_v2_800ep_pretrain.pth.tar)")
            return cls.from_moco_checkpoint(checkpoint, out_dim=out_dim, dilation=dilation)
        if checkpoint is not None:
            raise ValueError(f"checkpoint= is the MoCo file of teacher {RESNET50!r}; teacher {raw!r} does not take one")
        name = TEACHER_ALIASES.get(raw, raw)
        local = hub_local_files_only(local_files_only)
        try:
            config = AutoConfig.from_pretrained(name, local_files_only=local)
            backbone = _backbone_from(config, name, dilation, local)
        except OSError as err:
            raise OSError(f"could not load the 2D teacher {name!r} (local_files_only={local}): pass a local folder "
                          f"saved with save_pretrained, or download it once with `huggingface-cli download {name}`. "
                          f"Cause: {err}") from err
        teacher = cls(backbone, out_dim=out_dim, vit_features=vit_features)
        teacher.weights = f"local:{name}" if Path(name).is_dir() else f"hub:{name}"
        return teacher

    # -- behaviour ---------------------------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> ImageTeacher:
        """Train mode for the head only; the frozen backbone always stays in eval mode (BN statistics, dropout)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters an optimiser should update (the head's)."""
        return [p for p in self.parameters() if p.requires_grad]

    def normalize_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) in 0..255, or float in [0, 1] -> ImageNet-normalised float32."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
        x = images.to(torch.float32) / 255.0 if images.dtype == torch.uint8 else images.to(torch.float32)
        return (x - self.mean) / self.std

    def backbone_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Frozen features (B, C, H/stride, W/stride) of normalised pixels whose H, W are multiples of the stride
        (DINOv2: patch tokens of the last block, before or after the final LayerNorm per ``vit_features``)."""
        b, _, h, w = pixel_values.shape
        with torch.no_grad():
            if self.kind == "vit":
                captured: dict[str, torch.Tensor] = {}
                hook = self.backbone.layernorm.register_forward_hook(
                    lambda _m, args, _out: captured.__setitem__("pre_norm", args[0]))
                try:
                    out = self.backbone(pixel_values=pixel_values)
                finally:
                    hook.remove()
                seq = captured["pre_norm"] if self.vit_features == "pre_norm" else out.last_hidden_state
                tokens = seq[:, self.num_prefix_tokens:]
                return tokens.transpose(1, 2).reshape(b, self.feature_dim, h // self.stride, w // self.stride)
            if self.kind == "resnet":
                return self.backbone(pixel_values=pixel_values).last_hidden_state
            return self.backbone(pixel_values)

    def _input_grid(self, h: int, w: int) -> tuple[int, int, bool]:
        """``(H', W', resized)``: the size the backbone sees for an (h, w) image. ViTs: the nearest multiples of the
        patch size (resized, as SuperFlow / ScaLR feed multiples of 14); others: padded up to a multiple of the
        stride."""
        s = self.stride
        if self.kind == "vit":
            hh, ww = max(s, round(h / s) * s), max(s, round(w / s) * s)
            return hh, ww, (hh, ww) != (h, w)
        return h + (-h) % s, w + (-w) % s, False

    def cell_index(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """For an (h, w) image: ``(row_cell (h,), col_cell (w,))`` int64, the cell of the frozen feature map
        (:meth:`forward` with ``return_frozen=True``) that each pixel row / column lies in."""
        hh, ww, resized = self._input_grid(h, w)
        s = self.stride
        if resized:  # pixel centre (r + 0.5) maps to (r + 0.5) * hh / h in the resized input
            rows = ((torch.arange(h, dtype=torch.float64) + 0.5) * (hh / s) / h).floor().to(torch.int64)
            cols = ((torch.arange(w, dtype=torch.float64) + 0.5) * (ww / s) / w).floor().to(torch.int64)
            return rows.clamp(max=hh // s - 1), cols.clamp(max=ww // s - 1)
        return torch.arange(h) // s, torch.arange(w) // s

    def forward(self, images: torch.Tensor, return_frozen: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel features (B, out_dim, H, W), unit L2 norm per pixel (if ``normalize_output``).

        ``images``: (B, 3, H, W) uint8 RGB (or float in [0, 1]); any H, W (ViTs: resized to multiples of the patch
        size, others: padded to the stride; the output always has the input's size). With ``return_frozen`` also the
        frozen backbone map (B, C, H', W') (no gradient; pixel -> cell by :meth:`cell_index`).
        """
        x = self.normalize_images(images)
        h, w = x.shape[-2:]
        s = self.stride
        hh, ww, resized = self._input_grid(h, w)
        if resized:
            x = F.interpolate(x, size=(hh, ww), mode="bilinear", align_corners=False)
        elif (hh, ww) != (h, w):
            x = F.pad(x, (0, ww - w, 0, hh - h))
        feats = self.backbone_features(x)
        if feats.shape[-2:] != (hh // s, ww // s):
            raise RuntimeError(f"backbone returned a {tuple(feats.shape[-2:])} map for a {(hh, ww)} input; "
                               f"expected stride {s}")
        out = self.head(feats)
        if resized:
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=True)
        else:
            if s > 1:
                out = F.interpolate(out, scale_factor=s, mode="bilinear", align_corners=True)
            out = out[..., :h, :w]
        out = F.normalize(out, p=2, dim=1) if self.normalize_output else out
        return (out, feats) if return_frozen else out


def _backbone_from(config: Any, name: str | None, dilation: bool, local_files_only: bool) -> nn.Module:
    import transformers

    model_type = getattr(config, "model_type", None)
    classes = {"dinov2": "Dinov2Model", "dinov2_with_registers": "Dinov2WithRegistersModel", "resnet": "ResNetModel"}
    if model_type not in classes:
        raise ValueError(f"unsupported 2D teacher backbone type {model_type!r}; supported: {sorted(classes)}")
    cls = getattr(transformers, classes[model_type])
    model = cls(config) if name is None else cls.from_pretrained(name, local_files_only=local_files_only)
    if model_type == "resnet" and dilation:
        dilate_resnet(model)
    return model


# ------------------------------------------------------------------------------------------ synthetic stand-in VFM

SYNTHETIC_TEACHER_VERSION = 2  # bump when SyntheticBackbone or its training changes: old caches are then ignored


class SyntheticBackbone(nn.Module):
    """Small conv net for the synthetic world: (B, 3, H, W) normalised pixels -> (B, 64, H/4, W/4) features.

    Five 3x3 conv-BN-ReLU layers (two stride-2, two dilated for context), 64-d output: the "penultimate layer" that the
    teacher's head reads. ``classifier`` (1x1 conv to the classes) is used only while it is trained.
    """

    stride = 4

    def __init__(self, num_classes: int, width: int = 32, feature_dim: int = 64):
        super().__init__()

        def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.num_classes, self.feature_dim = int(num_classes), int(feature_dim)
        self.features = nn.Sequential(block(3, width, 2), block(width, 2 * width, 2), block(2 * width, 2 * width),
                                      block(2 * width, feature_dim, dilation=2), block(feature_dim, feature_dim,
                                                                                       dilation=4))
        self.classifier = nn.Conv2d(feature_dim, num_classes, 1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.features(pixel_values)

    def logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Class logits (B, K, H, W) at full resolution (training only)."""
        h, w = pixel_values.shape[-2:]
        return F.interpolate(self.classifier(self.features(pixel_values)), size=(h, w), mode="bilinear",
                             align_corners=False)


def camera_training_data(cameras: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Stack ``(image, semantic_mask)`` of synthetic cameras (objects with ``.image`` (H, W, 3) uint8 and
    ``.semantic_mask`` (H, W) int) into ``(images (N, H, W, 3), masks (N, H, W))``; all images must share a size."""
    cams = list(cameras)
    if not cams:
        raise ValueError("no cameras to train the synthetic teacher on")
    missing = [getattr(c, "name", "?") for c in cams if getattr(c, "semantic_mask", None) is None]
    if missing:
        raise ValueError(f"cameras without semantic_mask (synthetic-world cameras carry one): {missing[:5]}")
    shapes = {c.image.shape for c in cams}
    if len(shapes) != 1:
        raise ValueError(f"cameras have different image sizes {sorted(shapes)}; train on one size")
    return np.stack([c.image for c in cams]), np.stack([np.asarray(c.semantic_mask) for c in cams])


def train_synthetic_backbone(images: np.ndarray, masks: np.ndarray, num_classes: int, steps: int = 300,
                             batch_size: int = 8, lr: float = 3e-3, seed: int = 0,
                             log: Callable[[int, float], None] | None = None) -> SyntheticBackbone:
    """Train a :class:`SyntheticBackbone` to segment ``images`` (N, H, W, 3) uint8 into ``masks`` (N, H, W).

    Mask values ``0..num_classes-1`` are classes; any negative value (the synthetic world's sky is IGNORE_INDEX) is
    trained as one extra "unlabelled" class, so the features also separate sky. Adam, cross-entropy, random
    horizontal flips, ``steps`` mini-batches of ``batch_size``. Returns the net in eval mode.
    """
    images, masks = np.asarray(images), np.asarray(masks)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or masks.shape != images.shape[:3]:
        raise ValueError(f"need images (N, H, W, 3) uint8 and masks (N, H, W); got {images.shape} {images.dtype} "
                         f"and {masks.shape}")
    if masks.max() >= num_classes:
        raise ValueError(f"mask value {int(masks.max())} >= num_classes {num_classes}")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = SyntheticBackbone(num_classes + 1)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2)
    y_all = torch.from_numpy(np.where(masks < 0, num_classes, masks).astype(np.int64))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    net.train()
    for step in range(steps):
        idx = torch.randint(0, len(x_all), (min(batch_size, len(x_all)),), generator=g)
        x = (x_all[idx].float() / 255.0 - mean) / std
        y = y_all[idx]
        flip = torch.rand(len(idx), generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        y = torch.where(flip[:, None, None], y.flip(-1), y)
        loss = F.cross_entropy(net.logits(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log is not None:
            log(step, float(loss))
    return net.eval()


def default_cache_dir() -> Path:
    """``$LARGEAD_CACHE/teachers`` (default ``~/.cache/largead/teachers``)."""
    return Path(os.environ.get("LARGEAD_CACHE", Path.home() / ".cache" / "largead")) / "teachers"


def _write_teacher_cache(path: Path, state: dict[str, torch.Tensor], settings: str) -> None:
    """Store ``state`` at ``path`` (atomic, fsync-ed) with the settings and a SHA-256 of the tensors in the metadata."""
    from safetensors.torch import save_file

    with atomic_path(path, durable=True) as tmp:
        save_file(state, str(tmp), metadata={"settings": settings, "sha256": _state_digest(state)})


def _read_teacher_cache(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a cache written by :func:`_write_teacher_cache`; a truncated or damaged file (or one whose tensors
    fail the stored SHA-256) raises :class:`~largead.fileio.CorruptFileError` naming it. Files without a digest
    (largead <= 0.1) are read unchecked."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            digest = (fh.metadata() or {}).get("sha256")
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:  # SafetensorError (header, truncation), OSError
        reason = f"{type(err).__name__}: {' '.join(str(err).split())}"
        raise CorruptFileError(path, f"cached synthetic teacher is unreadable (truncated or corrupt: {reason}); "
                                     "delete it to retrain") from err
    if digest is not None and _state_digest(state) != digest:
        raise CorruptFileError(path, "cached synthetic teacher's weights do not match their SHA-256 (damaged file); "
                                     "delete it to retrain")
    return state


def _state_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class SyntheticTeacher(ImageTeacher):
    """Stand-in for a vision foundation model on the synthetic world. NOT a VFM.

    No pretrained 2D weights can be downloaded for the synthetic world, so this teacher's frozen backbone is a
    :class:`SyntheticBackbone` trained once, with supervision, on the renderer's images and semantic masks. Its
    features therefore carry semantic knowledge of the world's classes, as a VFM's would carry knowledge of real
    scenes; it is much stronger on this world than a VFM would be on real data (it was trained on its labels), so
    results obtained with it show that the pipeline works, not how much a real VFM helps.

    The trained backbone is cached at ``<cache_dir>/synthetic-<hash>.safetensors`` (atomic write) keyed by ``key``
    (e.g. ``{"world": dataclasses.asdict(config), "seed": seed}``) plus the training settings, and reused when present.
    """

    @classmethod
    def build(cls, key: dict[str, Any], data: Callable[[], tuple[np.ndarray, np.ndarray]], num_classes: int,
              cache_dir: str | os.PathLike | None = None, steps: int = 300, batch_size: int = 8, lr: float = 3e-3,
              seed: int = 0, out_dim: int = 64) -> SyntheticTeacher:
        """Load the cached backbone for ``key`` or train it on ``data()`` -> ``(images, masks)``, then wrap it.

        ``data`` is only called on a cache miss. The head (``out_dim``) is freshly initialised and trainable.
        """
        settings = {"key": key, "num_classes": int(num_classes), "steps": int(steps), "batch_size": int(batch_size),
                    "lr": float(lr), "seed": int(seed), "version": SYNTHETIC_TEACHER_VERSION}
        blob = json.dumps(settings, sort_keys=True, default=str)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
        folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        path = folder / f"synthetic-{digest}.safetensors"
        backbone = SyntheticBackbone(num_classes + 1)
        clean_stale_temporaries(folder)  # left by a process killed while writing the cache
        if path.is_file():
            state = _read_teacher_cache(path)
            try:
                backbone.load_state_dict(state, strict=True)
            except RuntimeError as err:
                raise RuntimeError(f"{path}: cached synthetic teacher does not fit SyntheticBackbone "
                                   f"(delete the file to retrain): {err}") from err
        else:
            images, masks = data()
            backbone = train_synthetic_backbone(images, masks, num_classes, steps=steps, batch_size=batch_size,
                                                lr=lr, seed=seed)
            state = {k: v.detach().contiguous() for k, v in backbone.state_dict().items()}
            _write_teacher_cache(path, state, blob)
        teacher = cls(backbone.eval(), out_dim=out_dim, feature_dim=backbone.feature_dim, stride=backbone.stride)
        teacher.cache_path = path
        teacher.weights = f"synthetic:{path}"
        return teacher
