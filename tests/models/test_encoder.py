"""LargeADEncoder / LargeADConfig: config validation and JSON, Hub save/load (strict, offline, cached), embed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file

from largead import LargeADConfig, LargeADEncoder
from largead.models.encoder import (
    CheckpointMismatchError,
    WeightsNotAvailableError,
)
from largead.sparse import VoxelGrid, batch_voxelize

SMALL = {"backbone": "minkunet14"}


@pytest.fixture(scope="module")
def encoder() -> LargeADEncoder:
    torch.manual_seed(0)
    enc = LargeADEncoder(LargeADConfig(**SMALL, input_norm={"nuscenes": (120.0, 60.0), "semantickitti": (0.3, 0.2)}))
    with torch.no_grad():  # non-trivial BN statistics so eval-mode outputs depend on them
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return enc.eval()


# ---------------------------------------------------------------------------------------------------- config
def test_config_json_round_trip(tmp_path):
    cfg = LargeADConfig(backbone="minkunet18", in_channels=4, out_channels=20, feature_mode="xyz_intensity",
                        voxel_size=[0.05, 0.05, 0.05], cylindrical=False, normalize_output=False, bn_momentum=0.02,
                        block_bn_momentum=None, input_norm={"nuscenes": [127.5, 50]})
    assert cfg.voxel_size == (0.05, 0.05, 0.05) and cfg.input_norm == {"nuscenes": (127.5, 50.0)}
    assert LargeADConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    cfg.save(tmp_path / "config.json")
    assert LargeADConfig.load(tmp_path / "config.json") == cfg
    assert cfg.grid == VoxelGrid((0.05, 0.05, 0.05), False)


@pytest.mark.parametrize("kwargs, match", [
    ({"backbone": "minkunet99"}, "known: minkunet14, minkunet18, minkunet34, minkunet50"),
    ({"feature_mode": "xyz_intensity", "in_channels": 1}, "gives 4 input channel.*in_channels is 1"),
    ({"in_channels": 4}, "gives 1 input channel.*in_channels is 4"),
    ({"feature_mode": "rgb"}, "unknown feature_mode 'rgb'"),
    ({"voxel_size": (0.1, 0.0, 0.1)}, "voxel_size"),
    ({"input_norm": {"nuscenes": (1.0, 0.0)}}, r"input_norm\['nuscenes'\]"),
    ({"input_norm": {"nuscenes": 3.0}}, r"input_norm\['nuscenes'\] must be \(mean, std\)"),
    ({"backend": "spconv"}, "unknown backend 'spconv'"),
    ({"bn_momentum": 0.0}, "bn_momentum"),
    ({"out_channels": 0}, "out_channels"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LargeADConfig(**kwargs)


def test_in_channels_follow_the_feature_mode_and_scalar_voxel_size_is_slidr_s():
    assert LargeADConfig().in_channels == 1 and LargeADConfig(feature_mode="xyz_intensity").in_channels == 4
    assert LargeADConfig(voxel_size=0.05).voxel_size == (0.05, 1.0, 0.05)  # SLidR: phi binned by 1 degree
    assert LargeADConfig(voxel_size=0.05, cylindrical=False).voxel_size == (0.05, 0.05, 0.05)


@pytest.mark.parametrize("data, match", [
    ({"cylindrical": "no"}, "'cylindrical' must be true or false, got 'no'"),
    ({"normalize_output": "false"}, "'normalize_output' must be true or false"),
    ({"out_channels": "64"}, "'out_channels' must be an integer"),
    ({"voxel_size": "0.1"}, "'voxel_size' must be"),
    ({"bn_momentum": True}, "'bn_momentum' must be a number"),
])
def test_config_json_fields_are_typed(tmp_path, data, match):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**LargeADConfig().to_dict(), **data}))
    with pytest.raises(ValueError, match=match) as err:
        LargeADConfig.load(path)
    assert str(path) in str(err.value)
    assert LargeADConfig.from_dict({"voxel_size": 0.05}).voxel_size == (0.05, 1.0, 0.05)


@pytest.mark.parametrize("text, match", [("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object")])
def test_config_json_that_is_not_an_object_names_the_file(tmp_path, text, match):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        LargeADConfig.load(path)
    assert str(path) in str(err.value)


def test_config_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**LargeADConfig().to_dict(), "superflow_stem": True}))
    with pytest.raises(ValueError, match=r"config.json.*unknown LargeADConfig keys \['superflow_stem'\]"):
        LargeADConfig.load(path)


# ---------------------------------------------------------------------------------------------------- forward
def test_encoder_is_the_minkunet_with_me_keys():
    enc = LargeADEncoder(LargeADConfig())
    keys = list(enc.state_dict())
    assert len(keys) == 374 and keys[0] == "conv0p1s1.kernel" and keys[-1] == "final.bias"
    assert enc.grid == VoxelGrid((0.1, 1.0, 0.1), True)


def test_forward_batch_and_decoder(encoder, scan):
    batch = encoder.voxelize([scan[:1500], scan[1500:]])
    out = encoder.forward_batch(batch)
    dec = encoder.decoder_forward(batch)
    assert out.shape == (batch.coords.shape[0], 64) and dec.shape == (batch.coords.shape[0], 96)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(out.shape[0]))
    raw = encoder.final(encoder.decoder_features(
        encoder._ops.sparse_input(batch.coords, batch.feats))).F  # final applied to the decoder features
    torch.testing.assert_close(out, torch.nn.functional.normalize(raw, dim=1))
    torch.testing.assert_close(dec @ encoder.final.kernel + encoder.final.bias, raw, rtol=1e-5, atol=1e-5)


def test_embed_numpy_torch_and_lists(encoder, scan):
    a, b = scan[:1200], scan[1200:2600]
    fa = encoder.embed(a, precision="fp32")
    assert isinstance(fa, torch.Tensor) and fa.shape == (1200, 64) and not fa.requires_grad
    torch.testing.assert_close(encoder.embed(torch.from_numpy(a), precision="fp32"), fa)
    torch.testing.assert_close(encoder.embed(a.astype(np.float64), precision="fp32"), fa)
    both = encoder.embed([a, torch.from_numpy(b)], precision="fp32")
    assert isinstance(both, list) and [t.shape[0] for t in both] == [1200, 1400]
    torch.testing.assert_close(both[0], fa, rtol=1e-5, atol=1e-5)  # eval mode: scans do not interact
    torch.testing.assert_close(both[1], encoder.embed(b, precision="fp32"), rtol=1e-5, atol=1e-5)
    # per point = feature of its voxel; the folded-BatchNorm fast path agrees with the plain layers
    batch = batch_voxelize([a], encoder.grid)
    vox = encoder.forward_batch(batch)
    torch.testing.assert_close(fa, vox[batch.inverse], rtol=1e-5, atol=2e-6)


def test_embed_points_in_one_voxel_share_features(encoder):
    pts = np.array([[10.0, 0.01, 0.01, 5.0], [10.02, 0.02, 0.02, 9.0], [-5.0, 3.0, 1.0, 1.0]], dtype=np.float32)
    f = encoder.embed(pts)
    assert torch.equal(f[0], f[1]) and not torch.equal(f[0], f[2])


def test_input_norm_applied_to_intensity(encoder, scan):
    pts = scan[:1500]
    normed = pts.copy()
    normed[:, 3] = (normed[:, 3] - 120.0) / 60.0
    got = encoder.embed(pts, dataset="nuscenes")
    torch.testing.assert_close(got, encoder.embed(normed))
    assert not torch.allclose(got, encoder.embed(pts))
    with pytest.raises(KeyError, match=r"'waymo'.*\['nuscenes', 'semantickitti'\]"):
        encoder.embed(pts, dataset="waymo")
    plain = LargeADEncoder(LargeADConfig(**SMALL)).eval()  # no statistics: raw features, dataset ignored
    torch.testing.assert_close(plain.embed(pts, dataset="waymo"), plain.embed(pts))


def test_embed_grad_only_in_train_mode(scan):
    enc = LargeADEncoder(LargeADConfig(**SMALL))
    out = enc.train().embed(scan[:800])
    assert out.requires_grad
    out.sum().backward()
    assert enc.conv0p1s1.kernel.grad is not None
    assert not enc.eval().embed(scan[:800]).requires_grad


def test_embed_bad_input(encoder):
    with pytest.raises(ValueError, match=r"scan 1: expected an \(N, >=4\)"):
        encoder.embed([np.zeros((5, 4), np.float32), np.zeros((5, 3), np.float32)])
    bad = np.zeros((5, 4), np.float32)
    bad[2, 0] = np.nan
    with pytest.raises(ValueError, match="scan 0: non-finite"):
        encoder.embed(bad)
    with pytest.raises(ValueError, match=r"feats must be \(3, 1\)"):
        encoder.forward_sparse(torch.zeros(3, 4, dtype=torch.int32), torch.zeros(3, 2))


# ---------------------------------------------------------------------------------------------------- Hub
def test_save_and_load_local_folder(encoder, scan, tmp_path):
    encoder.save_pretrained(tmp_path / "enc")
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert json.loads((tmp_path / "enc" / "config.json").read_text()) == encoder.config.to_dict()
    card = ModelCard.load(tmp_path / "enc" / "README.md")
    assert card.data.library_name == "largead" and "lidar" in card.data.tags
    loaded = LargeADEncoder.from_pretrained(tmp_path / "enc")
    assert not loaded.training and loaded.config == encoder.config
    for k, v in encoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    torch.testing.assert_close(loaded.embed(scan), encoder.embed(scan), rtol=0, atol=0)


def _tamper(folder: Path, edit) -> None:
    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors")


@pytest.mark.parametrize("edit, match", [
    (lambda s: s.pop("block3.0.conv2.kernel"), r"missing keys \(1\): block3.0.conv2.kernel"),
    (lambda s: s.__setitem__("head.weight", torch.zeros(3)), r"unexpected keys \(1\): head.weight"),
    (lambda s: s.__setitem__("final.kernel", torch.zeros(96, 17)),
     r"wrong shapes \(1\): final.kernel: checkpoint \[96, 17\] vs model \[96, 64\]"),
])
def test_strict_loading_names_the_keys(encoder, tmp_path, edit, match):
    folder = tmp_path / "enc"
    encoder.save_pretrained(folder)
    _tamper(folder, edit)
    with pytest.raises(CheckpointMismatchError, match=match):
        LargeADEncoder.from_pretrained(folder)


def test_incomplete_or_missing_folder(encoder, tmp_path):
    folder = tmp_path / "enc"
    encoder.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing model.safetensors"):
        LargeADEncoder.from_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        LargeADEncoder.from_pretrained(str(tmp_path / "nowhere" / "enc"))


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_offline_uncached_repo_raises_one_clear_error(offline_cache):
    with pytest.raises(WeightsNotAvailableError) as info:
        LargeADEncoder.from_pretrained("someorg/not-cached")
    msg = str(info.value)
    assert "hf download someorg/not-cached" in msg and "the Hub was not contacted" in msg
    assert "HF_HUB_OFFLINE=1" in msg and str(offline_cache) in msg and "local folder" in msg
    assert isinstance(info.value, OSError) and info.value.__cause__ is None


def test_each_case_of_an_unloadable_name_says_which_it_is(tmp_path, monkeypatch):
    import time

    import largead.models.encoder as E
    from largead.zoo import UnknownModelError

    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    calls = []

    def unreachable(**kw):  # what hf_hub_download raises when the network is down and nothing is cached
        calls.append(kw)
        if kw["local_files_only"]:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not in cache")
        raise huggingface_hub.errors.LocalEntryNotFoundError("connection error and not in cache")

    monkeypatch.setattr(E, "hf_hub_download", unreachable)
    # 1. a typo, with or without the org: the closest names, no network
    for typo in ("minkunet34-seem-nwk", "largead/minkunet34-seem-nwk"):
        with pytest.raises(UnknownModelError, match="Closest known names: largead/minkunet34-seem-nkw"):
            LargeADEncoder.from_pretrained(typo)
    assert not calls
    # 2. a zoo entry whose weights are not published: how to make them; the Hub is not contacted (cache only)
    start = time.perf_counter()
    with pytest.raises(WeightsNotAvailableError, match="not published yet") as info:
        LargeADEncoder.from_pretrained("minkunet34-seem-nkw")
    assert time.perf_counter() - start < 5 and all(c["local_files_only"] for c in calls)
    msg = str(info.value)
    assert "--config minkunet34-seem-nkw" in msg and "largead convert" in msg and "huggingface-cli" not in msg
    # 3. local_files_only: not "the Hub could not be reached"
    with pytest.raises(WeightsNotAvailableError, match="local_files_only=True was passed") as info:
        LargeADEncoder.from_pretrained("someorg/model", local_files_only=True)
    assert "could not be reached" not in str(info.value)
    # 4. a real network error
    with pytest.raises(WeightsNotAvailableError, match="the Hub could not be reached"):
        LargeADEncoder.from_pretrained("someorg/model")
    # 5. the random baseline is built here, no file needed
    random = LargeADEncoder.from_pretrained("largead/minkunet34-random", dtype=torch.float64)
    assert next(random.parameters()).dtype == torch.float64 and not random.training


def test_bounded_loading_fails_before_allocating(encoder, tmp_path, monkeypatch):
    import largead.models.encoder as E

    folder = tmp_path / "enc"
    encoder.save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "out_channels": 10**9}))
    with pytest.raises(ValueError, match=r"config.json: out_channels must be an integer in \[1, 65536\]"):
        LargeADEncoder.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**cfg, "out_channels": 60000}))
    built = []
    real_init = E.MinkUNet.__init__

    def spy(self, *a, **kw):
        built.append(torch.get_default_device() if hasattr(torch, "get_default_device") else None)
        real_init(self, *a, **kw)

    monkeypatch.setattr(E.MinkUNet, "__init__", spy)
    with pytest.raises(E.CheckpointMismatchError, match=r"final.kernel: checkpoint \[96, 64\] vs model \[96, 60000\]"):
        LargeADEncoder.from_pretrained(folder)
    assert len(built) == 1  # only the meta-device build that reads the shapes; no 60000-wide weights allocated


@pytest.mark.parametrize("case", ["text weights", "empty weights", "revision on a folder", "bad dtype",
                                  "device disagreement", "unknown kwarg"])
def test_from_pretrained_bad_inputs_name_the_file_or_argument(encoder, tmp_path, case):
    folder = tmp_path / "enc"
    encoder.save_pretrained(folder)
    kwargs, match = {}, None
    if case == "text weights":
        (folder / "model.safetensors").write_text("these are not weights")
        match = r"model.safetensors: not a readable safetensors file"
    elif case == "empty weights":
        (folder / "model.safetensors").write_bytes(b"")
        match = r"model.safetensors: not a readable safetensors file"
    elif case == "revision on a folder":
        kwargs, match = {"revision": "v2"}, "applies to Hub repositories, not to a local folder"
    elif case == "bad dtype":
        kwargs, match = {"dtype": torch.int8}, "dtype must be a floating torch.dtype"
    elif case == "device disagreement":
        kwargs, match = {"device": "cpu", "map_location": "meta"}, "disagree"
    else:
        kwargs, match = {"cache": "x"}, "unexpected keyword"
    with pytest.raises((ValueError, TypeError, OSError), match=match) as info:
        LargeADEncoder.from_pretrained(folder, **kwargs)
    assert "\n" not in str(info.value)
    if case in ("text weights", "empty weights"):
        assert str(folder / "model.safetensors") in str(info.value)


def _populate_cache(cache: Path, repo_id: str, encoder: LargeADEncoder, tmp_path: Path, sha: str) -> None:
    src = tmp_path / "src"
    encoder.save_pretrained(src)
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / sha
    snap.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(src / name, snap / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)


def test_cached_repo_loads_offline(encoder, offline_cache, tmp_path, scan):
    sha = "0123456789abcdef0123456789abcdef01234567"
    _populate_cache(offline_cache, "someorg/tiny-encoder", encoder, tmp_path, sha)
    for name in ("someorg/tiny-encoder", "hf-hub:someorg/tiny-encoder@main", f"someorg/tiny-encoder@{sha}"):
        loaded = LargeADEncoder.from_pretrained(name, local_files_only=True)
        assert loaded.config == encoder.config
        torch.testing.assert_close(loaded.embed(scan[:900]), encoder.embed(scan[:900]), rtol=0, atol=0)
    with pytest.raises(WeightsNotAvailableError, match="revision v2"):
        LargeADEncoder.from_pretrained("someorg/tiny-encoder", revision="v2")


def test_resolve_model_id_hook():
    from largead.zoo import resolve as _resolve_model_id

    assert _resolve_model_id("org/name") == ("org/name", None)
    assert _resolve_model_id("hf-hub:org/name@v1.0") == ("org/name", "v1.0")
    with pytest.raises(ValueError, match="expected org/name"):
        _resolve_model_id("org/name@")
    # zoo names: the org may be left out, the default teacher's suffix is an alias, unknown bare names are refused
    assert _resolve_model_id("minkunet34-seem-nkw") == ("largead/minkunet34-seem-nkw", None)
    assert _resolve_model_id("largead/minkunet34-seem-nkw-vit-b@v2") == ("largead/minkunet34-seem-nkw", "v2")
    with pytest.raises(KeyError, match="largead/minkunet34-seem-nkw"):
        _resolve_model_id("minkunet34-seem-nkv")


def test_zoo_name_loads_from_populated_cache(encoder, offline_cache, tmp_path, scan):
    sha = "89abcdef0123456789abcdef0123456789abcdef"
    _populate_cache(offline_cache, "largead/minkunet34-seem-nkw", encoder, tmp_path, sha)
    for name in ("minkunet34-seem-nkw", "largead/minkunet34-seem-nkw-vit-b", "hf-hub:largead/minkunet34-seem-nkw"):
        loaded = LargeADEncoder.from_pretrained(name)
        torch.testing.assert_close(loaded.embed(scan[:500]), encoder.embed(scan[:500]), rtol=0, atol=0)
    with pytest.raises(WeightsNotAvailableError, match="largead/minkunet34-seem-n is a zoo recipe whose weights are "
                                                       "not published yet"):
        LargeADEncoder.from_pretrained("minkunet34-seem-n")


# ---------------------------------------------------------------------------------------------------- precision
@pytest.fixture(scope="module")
def trained_encoder(make_scan_module):
    """A minkunet14 encoder fitted for a few steps to spatially varying targets (random Fourier features of the
    coordinates), its BatchNorm statistics then recomputed on the data: weights and statistics as training leaves
    them, unlike a random init. Small enough for the suite (a few seconds)."""
    torch.manual_seed(0)
    enc = LargeADEncoder(LargeADConfig(backbone="minkunet14"))
    scans = [make_scan_module(num_beams=12, points_per_ring=120, seed=s) for s in range(2)]
    proj = torch.randn(3, 64) * 0.7
    opt = torch.optim.Adam(enc.parameters(), lr=2e-3)
    enc.train()
    for step in range(4):
        pts = torch.from_numpy(scans[step % 2])
        target = torch.nn.functional.normalize(torch.sin(pts[:, :3] @ proj), dim=1)
        loss = (enc.embed(pts, precision="fp32") - target).square().sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    bns = [m for m in enc.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: the statistics of the data
    with torch.no_grad():
        for pts in scans:
            enc.embed(pts, precision="fp32")
    return enc.eval()


@pytest.fixture(scope="module")
def make_scan_module():
    from tests.models.conftest import lidar_scan

    return lidar_scan


def cosine_stats(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1).double()
    return float(cos.min()), float(torch.quantile(cos, 0.01)), float(cos.mean())


@pytest.mark.parametrize("precision", ["fp32", "bf16", "auto"])
def test_embed_precisions_return_float32(encoder, scan, precision):
    out = encoder.embed(scan[:900], precision=precision)
    assert out.dtype == torch.float32 and out.shape == (900, 64)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(900), rtol=1e-4, atol=1e-4)
    both = encoder.embed([scan[:900], scan[900:1500]], precision=precision)
    assert [t.dtype for t in both] == [torch.float32, torch.float32]


def test_embed_unknown_precision(encoder, scan):
    with pytest.raises(ValueError, match="unknown precision 'half'; expected one of auto, fp32, bf16"):
        encoder.embed(scan[:100], precision="half")


@pytest.mark.parametrize("beams, per_ring", [(32, 360), (64, 500)])  # nuScenes-like, SemanticKITTI-like density
def test_bf16_embed_agrees_with_fp32(trained_encoder, make_scan_module, beams, per_ring):
    """The floor behind precision="auto": per-point cosine similarity of bf16 to fp32 features (README: measured on
    the demo encoder and a converted official-layout checkpoint)."""
    pts = make_scan_module(num_beams=beams, points_per_ring=per_ring, seed=7)
    ref = trained_encoder.embed(pts, precision="fp32")
    low = trained_encoder.embed(pts, precision="bf16")
    lo, p1, mean = cosine_stats(low, ref)
    assert p1 >= 0.999 and mean >= 0.9999 and lo >= 0.99, (lo, p1, mean)  # measured here: ~0.99995 / 0.99999
    assert not torch.equal(low, ref)  # bf16 really ran


def test_auto_precision_follows_the_hardware(encoder, scan, monkeypatch):
    from largead.sparse import inference

    pts = scan[:700]
    monkeypatch.setattr(inference, "native_bf16", lambda device="cpu": False)
    torch.testing.assert_close(encoder.embed(pts, precision="auto"), encoder.embed(pts, precision="fp32"),
                               rtol=0, atol=0)
    monkeypatch.setattr(inference, "native_bf16", lambda device="cpu": True)
    torch.testing.assert_close(encoder.embed(pts, precision="auto"), encoder.embed(pts, precision="bf16"),
                               rtol=0, atol=0)


def test_embed_in_train_mode_with_bf16_keeps_the_graph(scan):
    enc = LargeADEncoder(LargeADConfig(**SMALL)).train()
    out = enc.embed(scan[:600], precision="bf16")
    assert out.dtype == torch.float32 and out.requires_grad
    out.sum().backward()
    assert enc.conv0p1s1.kernel.grad is not None and enc.conv0p1s1.kernel.grad.dtype == torch.float32
