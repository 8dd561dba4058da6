"""``LargeADEncoder``: the MinkUNet LiDAR encoder with its voxelisation front end and Hugging Face Hub support.

    >>> from largead import LargeADEncoder, LargeADConfig
    >>> enc = LargeADEncoder(LargeADConfig(backbone="minkunet34"))              # random weights
    >>> enc = LargeADEncoder.from_pretrained("largead/minkunet34-seem-nkw")     # doctest: +SKIP
    >>> feats = enc.eval().embed(points)     # (N, 4) x, y, z, intensity -> (N, 64)  # doctest: +SKIP

The encoder *is* the :class:`~largead.models.minkunet.MinkUNet` (its state-dict keys are MinkowskiEngine's keys, no
prefix) plus :class:`huggingface_hub.PyTorchModelHubMixin`. A saved folder holds ``config.json`` (the
:class:`LargeADConfig`) and ``model.safetensors``. Loading is strict: a missing, unexpected or mis-shaped tensor raises
:class:`CheckpointMismatchError` naming the keys; a Hub id that is neither cached nor reachable raises
:class:`WeightsNotAvailableError` saying how to get the weights.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import ModelCard, PyTorchModelHubMixin, constants, hf_hub_download
from huggingface_hub.errors import LocalEntryNotFoundError

from largead import DOCS_URL, PAPER_URL, REPO_URL
from largead.fileio import atomic_write_bytes
from largead.models.minkunet import MINKUNET_VARIANTS, TORCH_OPS, MinkUNet, SparseOps
from largead.sparse import (
    FEATURE_MODES,
    VoxelBatch,
    VoxelGrid,
    batch_voxelize,
    feature_channels,
    input_features,
)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
BACKENDS = ("torch", "minkowski")
MAX_CHANNELS = 65536  # a sanity bound: a config.json asking for more is refused before anything is allocated
README_NAME = "README.md"


class CheckpointMismatchError(ValueError):
    """A state dict does not fit the model: lists the missing, unexpected and mis-shaped keys."""


class WeightsNotAvailableError(LocalEntryNotFoundError):
    """The weights are neither in the local Hugging Face cache nor downloadable (offline or no network)."""


# --------------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class LargeADConfig:
    """Architecture, voxelisation and input handling of a :class:`LargeADEncoder`: the one architecture spec of the
    project (the zoo stores one per entry, the training configs' ``model:`` blocks are parsed into it, ``config.json``
    is its serialisation).

    Attributes:
        backbone: MinkUNet variant, one of ``minkunet14/18/34/50``.
        in_channels: input feature channels; derived from ``feature_mode`` when omitted (1, or 4 for xyz_intensity),
            and must agree with it when given.
        out_channels: width of ``final`` (64 for pretrained encoders, the class count for a fine-tuned one).
        feature_mode: per-point input features, see :data:`largead.sparse.FEATURE_MODES`.
        voxel_size: (rho [m], phi [deg], z [m]) when ``cylindrical``, else (x, y, z) [m]. SLidR: (0.1, 1.0, 0.1). A
            single number ``v`` is read as SLidR's ``voxel_size`` option: ``(v, 1.0, v)`` cylindrical (SLidR bins the
            azimuth by 1 degree whatever the voxel size), ``(v, v, v)`` Cartesian.
        cylindrical: cylindrical (SLidR) or Cartesian voxels.
        normalize_output: L2-normalise the per-voxel output of ``final`` (pretraining projection head).
        bn_momentum: momentum of the stem/encoder/decoder/downsample BatchNorms (0.05 pretraining, 0.02 fine-tuning).
        block_bn_momentum: momentum of the BatchNorms inside residual blocks; 0.1 reproduces SLidR (which never
            passes its ``bn_momentum`` there), ``None`` means "same as ``bn_momentum``".
        input_norm: ``{dataset: (mean, std)}`` applied as ``(intensity - mean) / std`` when a scan is embedded with
            ``dataset=...`` (LargeAD's per-dataset normalisation; nuScenes intensity is 0-255, SemanticKITTI 0-1).
        backend: ``"torch"`` (largead.sparse) or ``"minkowski"`` (MinkowskiEngine, optional install).

    Field types are checked (``"cylindrical": "no"`` is an error, not ``True``); :meth:`from_dict` and :meth:`load`
    name the file and the field in every error.
    """

    backbone: str = "minkunet34"
    in_channels: int | None = None
    out_channels: int = 64
    feature_mode: str = "intensity"
    voxel_size: tuple[float, float, float] | float = (0.1, 1.0, 0.1)
    cylindrical: bool = True
    normalize_output: bool = True
    bn_momentum: float = 0.05
    block_bn_momentum: float | None = 0.1
    input_norm: dict[str, tuple[float, float]] = field(default_factory=dict)
    backend: str = "torch"

    def __post_init__(self) -> None:
        for name in ("backbone", "feature_mode", "backend"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        for name in ("cylindrical", "normalize_output"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{name} must be true or false, got {value!r} ({type(value).__name__})")
            setattr(self, name, bool(value))
        if self.backbone not in MINKUNET_VARIANTS:
            raise ValueError(f"unknown backbone {self.backbone!r}; known: {', '.join(MINKUNET_VARIANTS)}")
        if self.feature_mode not in FEATURE_MODES:
            raise ValueError(f"unknown feature_mode {self.feature_mode!r}; known: {', '.join(FEATURE_MODES)}")
        expected = feature_channels(self.feature_mode)
        if self.in_channels is None:
            self.in_channels = expected
        for name in ("in_channels", "out_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_CHANNELS:
                raise ValueError(f"{name} must be an integer in [1, {MAX_CHANNELS}], got {value!r}")
            setattr(self, name, int(value))
        if self.in_channels != expected:
            raise ValueError(f"feature_mode {self.feature_mode!r} gives {expected} input channel(s) but in_channels is "
                             f"{self.in_channels}; set in_channels={expected} or choose another feature_mode")
        voxel = self.voxel_size
        if isinstance(voxel, (int, float, np.floating, np.integer)) and not isinstance(voxel, bool):
            voxel = (float(voxel), 1.0, float(voxel)) if self.cylindrical else (float(voxel),) * 3
        elif not isinstance(voxel, (list, tuple, np.ndarray)):
            raise ValueError(f"voxel_size must be a number or three numbers, got {voxel!r}")
        self.voxel_size = VoxelGrid(tuple(voxel), self.cylindrical).voxel_size  # validates
        for name in ("bn_momentum", "block_bn_momentum"):
            value = getattr(self, name)
            if value is None and name == "block_bn_momentum":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")
            setattr(self, name, float(value))
        if not isinstance(self.input_norm, Mapping):
            raise TypeError(f"input_norm must map dataset -> (mean, std), got {type(self.input_norm).__name__}")
        norm: dict[str, tuple[float, float]] = {}
        for dataset, stats in self.input_norm.items():
            try:
                mean, std = (float(v) for v in stats)
            except (TypeError, ValueError):
                raise ValueError(f"input_norm[{dataset!r}] must be (mean, std), got {stats!r}") from None
            if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
                raise ValueError(f"input_norm[{dataset!r}] needs a finite mean and a positive std, got {stats!r}")
            norm[str(dataset)] = (mean, std)
        self.input_norm = norm
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; known: {', '.join(BACKENDS)}")

    @property
    def grid(self) -> VoxelGrid:
        """The :class:`~largead.sparse.VoxelGrid` of this configuration."""
        return VoxelGrid(self.voxel_size, self.cylindrical)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        d = asdict(self)
        d["voxel_size"] = list(self.voxel_size)
        d["input_norm"] = {k: list(v) for k, v in self.input_norm.items()}
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> LargeADConfig:
        """Build from a dict with the project's typed config system (:func:`largead.config.from_dict`): unknown keys,
        wrong types and out-of-range values raise :class:`~largead.config.ConfigError` (a ``ValueError``) naming
        ``source`` and the field."""
        from largead.config import ConfigError, from_dict

        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a JSON object of LargeADConfig fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown LargeADConfig keys {unknown} (known: {sorted(known)}); "
                              "the file may come from a newer largead version")
        try:
            return from_dict(cls, dict(data), source=source)
        except ConfigError:
            raise
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{source}: {err}") from None

    def to_json_string(self) -> str:
        """The configuration as indented JSON with sorted keys."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``config.json`` atomically."""
        atomic_write_bytes(Path(path), self.to_json_string().encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LargeADConfig:
        """Read a ``config.json`` written by :meth:`save` (errors name the file)."""
        from largead.config import ConfigError

        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from None
        return cls.from_dict(data, source=str(path))


# --------------------------------------------------------------------------------------------------------------------
# Strict state-dict loading
# --------------------------------------------------------------------------------------------------------------------
def _listing(items: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def check_state_dict_shapes(expected: Mapping[str, tuple[int, ...]], got: Mapping[str, tuple[int, ...]], source: str,
                            what: str) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``got`` (name -> shape, e.g. a safetensors header) has exactly
    the keys and shapes ``expected`` (the model's)."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [f"{k}: checkpoint {list(got[k])} vs model {list(v)}"
             for k, v in expected.items() if k in got and tuple(got[k]) != tuple(v)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if wrong:
            parts.append(f"wrong shapes ({len(wrong)}): {_listing(wrong)}")
        raise CheckpointMismatchError(f"{source} does not match {what}: " + "; ".join(parts))


def check_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state`` has exactly the keys and shapes of ``model``."""
    what = getattr(model, "describe", lambda: type(model).__name__)()
    check_state_dict_shapes({k: tuple(v.shape) for k, v in model.state_dict().items()},
                            {k: tuple(v.shape) for k, v in state.items()}, source, what)


def load_state_dict_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Check ``state`` with :func:`check_state_dict`, then load it into ``model``."""
    check_state_dict(model, state, source)
    model.load_state_dict(dict(state), strict=True)


# --------------------------------------------------------------------------------------------------------------------
# Model names
# --------------------------------------------------------------------------------------------------------------------
def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or name in (".", "..")


def safetensors_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """``{tensor name: shape}`` from a ``.safetensors`` file's header, without reading the tensors; a file that is
    not a safetensors file raises :class:`CheckpointMismatchError` naming it."""
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - safe_open has no iter
    except Exception as err:  # noqa: BLE001 - SafetensorError, OSError...: all mean "not a usable weights file"
        raise CheckpointMismatchError(f"{path}: not a readable safetensors file "
                                      f"({type(err).__name__}: {' '.join(str(err).split())})") from None


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> str:
    return str(cache_dir or constants.HF_HUB_CACHE)


class _HubFiles:
    """Where the files of a checkpoint are, once resolved (a local folder or the Hugging Face cache)."""

    def __init__(self, config: str, weights: str, card: str | None, source: str) -> None:
        self.config, self.weights, self.card, self.source = config, weights, card, source


def _hub_files(repo_id: str, revision: str | None, *, cache_dir: Any, token: Any, force_download: bool,
               local_files_only: bool) -> _HubFiles:
    """Download (or find in the cache) ``config.json``, ``model.safetensors`` and ``README.md`` of ``repo_id``,
    turning the Hub's errors into one :class:`WeightsNotAvailableError` that says which case it is."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from largead.hub import hub_offline

    rev = f" (revision {revision})" if revision else ""
    offline = local_files_only or hub_offline()
    kwargs = {"repo_id": repo_id, "revision": revision, "cache_dir": cache_dir, "token": token,
              "force_download": force_download, "local_files_only": offline}
    try:
        config = hf_hub_download(filename=CONFIG_NAME, **kwargs)
        weights = hf_hub_download(filename=WEIGHTS_NAME, **kwargs)
    except LocalEntryNotFoundError:
        if offline:
            why = ("local_files_only=True was passed" if local_files_only else
                   "offline mode is on (HF_HUB_OFFLINE=1)")
            raise WeightsNotAvailableError(
                f"{repo_id}{rev} is not in the local Hugging Face cache ({_cache_dir(cache_dir)}) and {why}, so the "
                f"Hub was not contacted. Download it on a connected machine (`hf download {repo_id}"
                f"{' --revision ' + revision if revision else ''}`) and copy the cache folder here (or set "
                "HF_HUB_CACHE to it), or pass a local folder holding config.json and model.safetensors.") from None
        raise WeightsNotAvailableError(
            f"could not download {repo_id}{rev}: the Hub could not be reached. Check the network or proxy, or set "
            "HF_HUB_OFFLINE=1 to use only what is in the local cache.") from None
    except (GatedRepoError, RepositoryNotFoundError):
        raise WeightsNotAvailableError(f"{repo_id}: no such model repository on the Hub, or it is private or gated "
                                       "(log in with `hf auth login`, or pass token=)") from None
    except RevisionNotFoundError:
        raise WeightsNotAvailableError(f"{repo_id}: revision {revision!r} does not exist") from None
    except EntryNotFoundError as err:
        missing = WEIGHTS_NAME if WEIGHTS_NAME in str(err) else CONFIG_NAME
        raise WeightsNotAvailableError(f"{repo_id}{rev} has no {missing}: not a largead encoder repository") from None
    except (HfHubHTTPError, OSError) as err:
        raise WeightsNotAvailableError(f"could not download {repo_id}{rev} from the Hub ({type(err).__name__}: "
                                       f"{' '.join(str(err).split())[:200]})") from None
    card = None
    try:
        card = hf_hub_download(filename=README_NAME, **{**kwargs, "local_files_only": True})
    except Exception:  # noqa: BLE001 - the card is optional; it was fetched with the snapshot if it exists
        if not offline:
            with contextlib.suppress(Exception):
                card = hf_hub_download(filename=README_NAME, **kwargs)
    return _HubFiles(config, weights, card, f"{repo_id}{rev}")


def _unpublished_message(info: Any, cache_dir: Any) -> str:
    short = info.short_name
    return (f"{info.name} is a zoo recipe whose weights are not published yet (and not in your Hugging Face cache, "
            f"{_cache_dir(cache_dir)}). Pretrain it with `accelerate launch training/pretrain.py --config {short}`, "
            "or convert an official SLidR/Seal checkpoint with `largead convert FILE.pt FOLDER` and load the folder; "
            f"`largead.create_encoder('{short}', pretrained=False)` builds its architecture with random weights.")


# --------------------------------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------------------------------
def _ops_for(backend: str) -> SparseOps:
    if backend == "torch":
        return TORCH_OPS
    from largead.models.minkowski import minkowski_ops

    return minkowski_ops()


class LargeADEncoder(
    MinkUNet,
    PyTorchModelHubMixin,
    library_name="largead",
    tags=["lidar", "point-cloud", "3d", "self-supervised", "autonomous-driving", "minkunet", "largead"],
    repo_url=REPO_URL,
    paper_url=PAPER_URL,
    docs_url=DOCS_URL,
    license="apache-2.0",
):
    """A MinkUNet LiDAR encoder with voxelisation, per-point embedding and Hub save/load.

    ``LargeADEncoder(config)`` builds randomly initialised weights from a :class:`LargeADConfig` (or a dict of its
    fields). With ``config.backend == "minkowski"`` the layers are MinkowskiEngine's (imported only then), with the
    same parameter names, so weights move freely between backends.
    """

    def __init__(self, config: LargeADConfig | dict[str, Any] | None = None) -> None:
        if config is None:
            config = LargeADConfig()
        elif not isinstance(config, LargeADConfig):
            config = LargeADConfig.from_dict(config)
        super().__init__(in_channels=config.in_channels, out_channels=config.out_channels, variant=config.backbone,
                         bn_momentum=config.bn_momentum, block_bn_momentum=config.block_bn_momentum,
                         ops=_ops_for(config.backend))
        self.config = config
        self.card_text: str | None = None  # the model card this encoder was loaded with, written back on save

    def describe(self) -> str:
        """Short description used in error messages."""
        c = self.config
        return f"LargeADEncoder({c.backbone}, in_channels={c.in_channels}, out_channels={c.out_channels})"

    @property
    def grid(self) -> VoxelGrid:
        """The voxel grid points are quantised on."""
        return self.config.grid

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return next(self.parameters()).device

    # ---------------------------------------------------------------- input
    def _point_features(self, points: torch.Tensor, dataset: str | None, index: int) -> torch.Tensor:
        mode = self.config.feature_mode
        need = 3 if mode == "ones" else 4
        if points.ndim != 2 or points.shape[1] < need:
            raise ValueError(f"scan {index}: expected an (N, >={need}) array of x, y, z"
                             f"{', intensity' if need == 4 else ''} for feature_mode {mode!r}, "
                             f"got shape {tuple(points.shape)}")
        if not bool(torch.isfinite(points[:, :need]).all()):
            raise ValueError(f"scan {index}: non-finite coordinates or intensity")
        return input_features(points, mode, self.config.input_norm, dataset)

    def voxelize(self, scans: np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor],
                 dataset: str | None = None) -> VoxelBatch:
        """Voxelise one scan or a list of scans ((N_b, >=4) x, y, z, intensity) on the model's device.

        ``dataset`` selects ``config.input_norm[dataset]`` for the intensity column. A model whose ``input_norm`` is
        empty takes raw features and ignores ``dataset``; a model with normalisation statistics raises KeyError for a
        dataset it has none for. ``feature_mode="ones"`` has no intensity column, so nothing is normalised.
        """
        if isinstance(scans, (np.ndarray, torch.Tensor)):
            scans = [scans]
        if len(scans) == 0:
            raise ValueError("voxelize needs at least one scan")
        device = self.device
        pts = [torch.as_tensor(np.asarray(s) if not isinstance(s, torch.Tensor) else s).to(device) for s in scans]
        feats = [self._point_features(p, dataset, i) for i, p in enumerate(pts)]
        return batch_voxelize([p[:, :3] for p in pts], self.grid, features=feats)

    # ---------------------------------------------------------------- forward
    def _run(self, coords: torch.Tensor, feats: torch.Tensor, decoder_only: bool,
             dtype: torch.dtype | None = None) -> torch.Tensor:
        """The network on unique voxels. ``dtype=None``: the layers as they are (float32 weights, autocast if the
        caller enabled it). ``dtype`` float32/bfloat16 in eval mode without autograd: the inference fast path
        (:func:`largead.sparse.inference.fused_inference`: BatchNorm folded into the convolutions, weights cached
        in ``dtype``); with autograd, bfloat16 runs under ``torch.autocast``. The result is float32 whenever
        ``dtype`` is given."""
        import contextlib

        from largead.sparse.inference import fused_inference

        if coords.ndim != 2 or coords.shape[1] != 4:
            raise ValueError(f"coords must be (M, 4) (batch, i, j, k), got shape {tuple(coords.shape)}")
        if feats.ndim != 2 or feats.shape != (coords.shape[0], self.in_channels):
            raise ValueError(f"feats must be ({coords.shape[0]}, {self.in_channels}), got shape {tuple(feats.shape)}")
        device = self.device
        param_dtype = next(self.parameters()).dtype
        x = self._ops.sparse_input(coords.to(device), feats.to(device=device, dtype=param_dtype))
        if dtype is None:
            context = contextlib.nullcontext()
        elif self.backend != "torch":
            if dtype != torch.float32:
                raise ValueError(f"the {self.backend} backend runs in float32 only; use precision='fp32'")
            context = contextlib.nullcontext()
        elif not self.training and not torch.is_grad_enabled():
            context = fused_inference(self, dtype, self.conv_bn_pairs(), inplace_relu=True, inplace_add=True)
        elif dtype != param_dtype:
            context = torch.autocast(device.type, dtype=dtype)
        else:
            context = contextlib.nullcontext()
        with context:
            out = self.decoder_features(x)
            if not decoder_only:
                out = self.final(out)
            out = self._ops.output_features(out, x)
        return out if dtype is None else out.float()

    def forward_sparse(self, coords: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """Per-voxel features (M, out_channels) for unique voxel ``coords`` (M, 4) and input ``feats`` (M, C_in),
        L2-normalised when ``config.normalize_output``."""
        out = self._run(coords, feats, decoder_only=False)
        if self.config.normalize_output:
            out = torch.nn.functional.normalize(out, p=2, dim=1)
        return out

    def forward_batch(self, batch: VoxelBatch) -> torch.Tensor:
        """Per-voxel features (M, out_channels) of a :class:`~largead.sparse.VoxelBatch`."""
        return self.forward_sparse(batch.coords, batch.feats)

    def decoder_forward(self, batch: VoxelBatch) -> torch.Tensor:
        """Per-voxel features before ``final`` (M, decoder_channels; 96 for minkunet34), never normalised."""
        return self._run(batch.coords, batch.feats, decoder_only=True)

    def embed(self, points: np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor],
              dataset: str | None = None, precision: str = "auto") -> torch.Tensor | list[torch.Tensor]:
        """Per-point features: (N, D) float32 for one scan, a list of (N_b, D) for a list of scans.

        Each point gets the feature of its voxel (points sharing a voxel share the feature). In eval mode the pass
        runs under ``torch.no_grad()``; in train mode it keeps the graph (and BatchNorm uses batch statistics), so
        call ``.eval()`` for inference.

        ``precision``: ``"auto"`` (default) computes in bfloat16 where the model's device does so natively (x86 CPUs
        with AVX512-BF16 or AMX, CUDA GPUs with bf16; :func:`largead.sparse.inference.native_bf16`) and in float32
        elsewhere; ``"fp32"`` / ``"bf16"`` force one. In eval mode the network runs with its BatchNorms folded into
        the convolutions and the weights cached in that dtype (rebuilt when the weights change). The result is
        float32 either way; bfloat16 features agree with float32 ones to a per-point cosine similarity above 0.999
        (measured in the README, guarded by the tests). The MinkowskiEngine backend runs in float32 only.
        """
        from largead.sparse.inference import resolve_precision

        dtype = resolve_precision(precision, self.device)
        if self.backend != "torch" and precision == "auto":
            dtype = torch.float32
        single = isinstance(points, (np.ndarray, torch.Tensor))
        scans = [points] if single else list(points)
        with torch.set_grad_enabled(self.training and torch.is_grad_enabled()):
            batch = self.voxelize(scans, dataset)
            per_voxel = self._run(batch.coords, batch.feats, decoder_only=False, dtype=dtype)
            if self.config.normalize_output:
                per_voxel = torch.nn.functional.normalize(per_voxel, p=2, dim=1)
            per_point = per_voxel.index_select(0, batch.inverse)
        if single:
            return per_point
        return list(torch.split(per_point, torch.diff(batch.point_offsets).tolist()))

    # ---------------------------------------------------------------- Hub
    def _save_pretrained(self, save_directory: Path) -> None:
        """Write ``model.safetensors``, ``config.json`` and the model card ``README.md``, each atomically. The card
        is the one this encoder was loaded with, else an existing ``README.md`` is kept, else a largead card is
        rendered from the config (:func:`largead.cards.render_card`)."""
        from safetensors.torch import save as safetensors_save

        folder = Path(save_directory)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write_bytes(folder / WEIGHTS_NAME, safetensors_save(state, metadata={"format": "pt"}))
        self.config.save(folder / CONFIG_NAME)
        if self.card_text is not None:
            atomic_write_bytes(folder / README_NAME, self.card_text.encode("utf-8"))
        elif not (folder / README_NAME).is_file():
            atomic_write_bytes(folder / README_NAME, str(self.generate_model_card()).encode("utf-8"))

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The model card of this encoder: the one it was loaded with, else a largead card for its config (not the
        Hub mixin's generic card)."""
        if self.card_text is not None:
            return ModelCard(self.card_text)
        from largead.cards import render_card

        return render_card(None, config=self.config.to_dict())

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike[str], *, revision: str | None = None,
                        local_files_only: bool = False, cache_dir: str | os.PathLike[str] | None = None,
                        token: str | bool | None = None, force_download: bool = False,
                        device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                        torch_dtype: torch.dtype | None = None, map_location: str | torch.device | None = None,
                        backend: str | None = None, config: LargeADConfig | None = None,
                        **kwargs: Any) -> LargeADEncoder:
        """Load an encoder, in eval mode, from a local folder or the Hub.

        ``pretrained_model_name_or_path``: a folder holding ``config.json`` and ``model.safetensors``; a zoo name
        (``largead/minkunet34-seem-nkw``, with or without the org, an alias, ``...@revision``, ``hf-hub:...``); or any
        Hub repo id ``org/name``. ``largead/minkunet34-random`` builds the random-init baseline locally.

        Loading is strict: the safetensors header is checked against the architecture of ``config.json`` before
        anything is allocated, and every tensor must match. Errors say which case it is: an unknown zoo name (with
        the closest names), a zoo entry whose weights are not published, a repo not in the cache while offline
        (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``: the Hub is not contacted), a network error, a file that
        is not what it should be (named).

        Keyword arguments: ``revision`` (Hub only; an error with a local folder), ``local_files_only``,
        ``cache_dir``, ``token``, ``force_download``; ``device`` (or its alias ``map_location``; default CPU) and
        ``dtype`` (or ``torch_dtype``) of the returned parameters; ``backend`` overrides ``config.backend``
        (``"minkowski"``); ``config`` replaces the stored config (it must fit the weights). The folder's model card
        (``README.md``) is kept and written again by :meth:`save_pretrained`.
        """
        if kwargs:
            raise TypeError(f"from_pretrained() got unexpected keyword argument(s) {sorted(kwargs)}")
        if device is not None and map_location is not None and torch.device(device) != torch.device(map_location):
            raise ValueError(f"device={device!r} and map_location={map_location!r} disagree; pass one")
        if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
            raise ValueError(f"dtype={dtype} and torch_dtype={torch_dtype} disagree; pass one")
        device = device if device is not None else (map_location if map_location is not None else "cpu")
        dtype = dtype if dtype is not None else torch_dtype
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating torch.dtype (e.g. torch.bfloat16), got {dtype!r}")

        name = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(name):
            if revision is not None:
                raise ValueError(f"{name}: revision={revision!r} applies to Hub repositories, not to a local folder")
            folder = Path(name)
            missing = [f for f in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / f).is_file()]
            if missing:
                raise FileNotFoundError(f"{folder}: not a largead checkpoint folder, missing {', '.join(missing)}")
            card = folder / README_NAME
            files = _HubFiles(str(folder / CONFIG_NAME), str(folder / WEIGHTS_NAME),
                              str(card) if card.is_file() else None, str(folder))
        elif isinstance(pretrained_model_name_or_path, Path) or _looks_like_path(name):
            raise FileNotFoundError(f"{name}: no such directory (expected a folder with {CONFIG_NAME} and "
                                    f"{WEIGHTS_NAME}, or a Hub id org/name)")
        else:
            from largead.zoo import resolve, zoo_entry

            repo_id, name_rev = resolve(name)
            if revision and name_rev and revision != name_rev:
                raise ValueError(f"conflicting revisions for {name!r}: {name_rev!r} in the name and "
                                 f"revision={revision!r}")
            revision = revision or name_rev
            info = zoo_entry(repo_id)
            if info is not None and info.source == "random":
                model = cls(replace(info.config, backend=backend or info.config.backend))
                return model.to(device=device, dtype=dtype).eval()
            unpublished = info is not None and not info.published
            try:
                files = _hub_files(repo_id, revision, cache_dir=cache_dir, token=token,
                                   force_download=force_download and not unpublished,
                                   local_files_only=local_files_only or unpublished)
            except WeightsNotAvailableError:
                if unpublished:  # not in the cache: say that the weights do not exist yet, not "you are offline"
                    raise WeightsNotAvailableError(_unpublished_message(info, cache_dir)) from None
                raise
        cfg = config if config is not None else LargeADConfig.load(files.config)
        if not isinstance(cfg, LargeADConfig):
            cfg = LargeADConfig.from_dict(cfg, source="config=")
        if backend is not None:
            cfg = replace(cfg, backend=backend)
        shapes = safetensors_shapes(files.weights)
        with torch.device("meta"):  # the architecture's shapes, nothing allocated
            expected = {k: tuple(v.shape) for k, v in cls(replace(cfg, backend="torch")).state_dict().items()}
        check_state_dict_shapes(expected, shapes, files.weights, f"{files.config} ({cls.__name__} {cfg.backbone}, "
                                f"in_channels={cfg.in_channels}, out_channels={cfg.out_channels})")
        model = cls(cfg)
        model = cls._load_as_safetensor(model, files.weights, "cpu", True)
        model.to(device=device, dtype=dtype)
        model.card_text = Path(files.card).read_text(encoding="utf-8") if files.card else None
        return model

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir: str | Path | None,
                         force_download: bool, local_files_only: bool, token: str | bool | None,
                         **model_kwargs: Any) -> LargeADEncoder:
        """The mixin's hook: the same loading as :meth:`from_pretrained`."""
        model_kwargs.pop("config", None)  # the mixin passes the parsed config.json; ours reads it itself
        return cls.from_pretrained(model_id, revision=revision if not os.path.isdir(model_id) else None,
                                   cache_dir=cache_dir, force_download=force_download,
                                   local_files_only=local_files_only, token=token, **model_kwargs)

    @classmethod
    def _load_as_safetensor(cls, model: LargeADEncoder, model_file: str, map_location: str,
                            strict: bool) -> LargeADEncoder:
        """Load ``model_file`` (``model.safetensors``, or a weights-only ``pytorch_model.bin``) into ``model``,
        always strictly (``strict`` is ignored); the mixin's pickle hook is the same function."""
        if str(model_file).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(model_file, device="cpu")
        else:
            state = torch.load(model_file, map_location="cpu", weights_only=True)
        load_state_dict_strict(model, state, model_file)
        model.to(map_location)
        model.eval()
        return model

    _load_as_pickle = _load_as_safetensor


__all__ = [
    "BACKENDS",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "CheckpointMismatchError",
    "LargeADConfig",
    "LargeADEncoder",
    "WeightsNotAvailableError",
    "check_state_dict",
    "load_state_dict_strict",
]
