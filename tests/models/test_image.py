import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from largead.models.image import (
    DINOV2_ARCHITECTURES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MOCO_V2_800EP_URL,
    ImageTeacher,
    SyntheticBackbone,
    SyntheticTeacher,
    camera_training_data,
    dilate_resnet,
    dinov2_config,
    load_moco_state_dict,
    resnet50_config,
    resnet_state_dict_from_torchvision,
    train_synthetic_backbone,
)


def tiny_dinov2_config():
    from transformers import Dinov2Config

    return Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        patch_size=14, image_size=56)


def tiny_resnet_config(downsample_in_bottleneck=False):
    from transformers import ResNetConfig

    return ResNetConfig(embedding_size=8, hidden_sizes=[16, 32, 64, 128], depths=[1, 2, 1, 1],
                        layer_type="bottleneck", downsample_in_bottleneck=downsample_in_bottleneck)


def images(b, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)


def test_dinov2_teacher_shapes_norm_and_frozen():
    torch.manual_seed(0)
    teacher = ImageTeacher.from_config(tiny_dinov2_config())
    assert teacher.stride == 14 and teacher.feature_dim == 32
    teacher.train()
    assert not teacher.backbone.training and teacher.head.training  # backbone stays in eval mode
    out = teacher(images(2, 50, 75))  # not multiples of 14: padded internally, cropped back
    assert out.shape == (2, 64, 50, 75)
    assert torch.allclose(out.norm(dim=1), torch.ones(2, 50, 75), atol=1e-5)
    out.sum().backward()
    assert all(p.grad is None for p in teacher.backbone.parameters())
    assert all(not p.requires_grad for p in teacher.backbone.parameters())
    assert teacher.head.weight.grad is not None and teacher.head.weight.grad.abs().sum() > 0
    assert {id(p) for p in teacher.trainable_parameters()} == {id(teacher.head.weight), id(teacher.head.bias)}


def test_dinov2_teacher_matches_manual_pipeline():
    """Patch tokens of the last block *before* the final LayerNorm (SuperFlow's and ScaLR's ``x_pre_norm``), reshaped
    row-major, 1x1 head, x14 bilinear (align_corners, as SLidR), L2 norm. The reference takes the pre-norm tokens from
    ``output_hidden_states`` (the last block's output), independently of the teacher's hook."""
    torch.manual_seed(1)
    teacher = ImageTeacher.from_config(tiny_dinov2_config()).eval()
    img = images(1, 28, 42, seed=3)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (img.float() / 255 - mean) / std

    def reference(tokens):
        grid = torch.stack([torch.stack([tokens[0, 1 + r * 3 + c] for c in range(3)], -1) for r in range(2)], -2)
        ref = F.conv2d(grid[None], teacher.head.weight, teacher.head.bias)
        return F.normalize(F.interpolate(ref, size=(28, 42), mode="bilinear", align_corners=True), dim=1)

    with torch.no_grad():
        out = teacher.backbone(pixel_values=x, output_hidden_states=True)
        pre, post = out.hidden_states[-1], out.last_hidden_state  # (1, 1 + 2*3, 32)
        assert torch.allclose(teacher.backbone.layernorm(pre), post, atol=1e-5)  # pre is what the LayerNorm reads
        assert not torch.allclose(pre, post, atol=1e-2)
        got = teacher(img)
        assert torch.allclose(got, reference(pre), atol=1e-5)
        teacher.vit_features = "post_norm"
        assert torch.allclose(teacher(img), reference(post), atol=1e-5)
        teacher.vit_features = "pre_norm"
        # float input in [0, 1] is the same as uint8
        assert torch.allclose(teacher(img.float() / 255), got, atol=1e-6)
    with pytest.raises(ValueError, match="vit_features"):
        ImageTeacher.from_config(tiny_dinov2_config(), vit_features="middle")


def test_dinov2_input_not_a_multiple_of_14_is_resized_not_padded():
    """50 x 75 -> the nearest multiples of 14 (56 x 70, 4 x 5 patches), as the references feed multiples of 14;
    the head's output is upsampled back to 50 x 75."""
    torch.manual_seed(2)
    teacher = ImageTeacher.from_config(tiny_dinov2_config()).eval()
    img = images(1, 50, 75, seed=4)
    with torch.no_grad():
        x = teacher.normalize_images(img)
        xr = F.interpolate(x, size=(56, 70), mode="bilinear", align_corners=False)
        feats = teacher.backbone_features(xr)
        assert feats.shape == (1, 32, 4, 5)
        ref = F.normalize(F.interpolate(teacher.head(feats), size=(50, 75), mode="bilinear", align_corners=True), dim=1)
        out, frozen = teacher(img, return_frozen=True)
    assert torch.allclose(out, ref, atol=1e-5) and torch.equal(frozen, feats)
    rows, cols = teacher.cell_index(50, 75)
    # pixel centre (r + .5) * 56 / 50 lies in patch floor(. / 14): rows 0-12 -> 0, 13-24 -> 1, ...
    assert rows.tolist() == [int((r + 0.5) * 56 / 50 // 14) for r in range(50)]
    assert cols.tolist() == [int((c + 0.5) * 70 / 75 // 14) for c in range(75)] and cols.max() == 4


def test_random_init_teachers_build_the_published_architectures():
    """Explicit opt-in only; nothing is read or downloaded; the teacher records that it is random."""
    sizes = {"vit-s": (384, 12, 6), "vit-b": (768, 12, 12), "vit-l": (1024, 24, 16)}
    for name, (width, depth, heads) in sizes.items():
        cfg = dinov2_config(name)
        assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (width, depth, heads)
        assert (cfg.patch_size, cfg.mlp_ratio, cfg.image_size, cfg.layer_norm_eps) == (14, 4, 518, 1e-6)
    assert set(DINOV2_ARCHITECTURES) == {"facebook/dinov2-small", "facebook/dinov2-base", "facebook/dinov2-large"}
    vit = ImageTeacher.from_pretrained_backbone("vit-s", random_init=True, local_files_only=True)
    assert vit.random_init and vit.weights == "random" and vit.stride == 14 and vit.feature_dim == 384
    # ViT-S/14 with a 37 x 37 position grid: 22.06 M parameters (the published 21 M backbone + grid and mask token)
    assert sum(p.numel() for p in vit.backbone.parameters()) == 22_056_576
    res = ImageTeacher.from_pretrained_backbone("resnet50", random_init=True)
    assert res.random_init and res.stride == 4 and res.feature_dim == 2048
    # seeded: every process and every resumed run builds the same random teacher, and the caller's RNG is untouched
    state = torch.random.get_rng_state()
    again = ImageTeacher.from_pretrained_backbone("resnet50", random_init=True)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(res.state_dict().values(), again.state_dict().values()))
    assert sum(p.numel() for p in res.backbone.parameters()) == 23_508_032  # torchvision ResNet-50 without fc
    assert res(images(1, 32, 48)).shape == (1, 64, 32, 48)
    with pytest.raises(ValueError, match="random_init builds only"):
        ImageTeacher.from_pretrained_backbone("some/hub-model", random_init=True)
    # not random unless asked: the alias without its file is an error, never other weights
    with pytest.raises(FileNotFoundError, match="moco_v2_800ep_pretrain.pth.tar"):
        ImageTeacher.from_pretrained_backbone("resnet50")


@pytest.mark.parametrize("downsample_in_bottleneck", [False, True])
def test_dilated_resnet_is_exact_a_trous_version(downsample_in_bottleneck):
    from transformers import ResNetModel

    torch.manual_seed(0)
    plain = ResNetModel(tiny_resnet_config(downsample_in_bottleneck)).eval()
    dilated = ResNetModel(tiny_resnet_config(downsample_in_bottleneck)).eval()
    dilated.load_state_dict(plain.state_dict())
    dilate_resnet(dilated)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a = plain(x).last_hidden_state  # stride 32: (2, 3)
        b = dilated(x).last_hidden_state  # stride 4: (16, 24)
    assert a.shape[-2:] == (2, 3) and b.shape[-2:] == (16, 24)
    assert torch.allclose(b[..., ::8, ::8], a, atol=1e-5)  # same function, sampled densely
    convs = dict(dilated.named_modules())
    if downsample_in_bottleneck:
        return
    assert convs["encoder.stages.1.layers.0.layer.1.convolution"].dilation == (1, 1)
    assert convs["encoder.stages.1.layers.1.layer.1.convolution"].dilation == (2, 2)
    assert convs["encoder.stages.3.layers.0.layer.1.convolution"].dilation == (4, 4)


def test_resnet_teacher_output_stride_4():
    torch.manual_seed(0)
    teacher = ImageTeacher.from_config(tiny_resnet_config())
    assert teacher.stride == 4 and teacher.feature_dim == 128
    out = teacher(images(2, 30, 45))
    assert out.shape == (2, 64, 30, 45)
    assert torch.allclose(out.norm(dim=1), torch.ones(2, 30, 45), atol=1e-5)
    undilated = ImageTeacher.from_config(tiny_resnet_config(), dilation=False)
    assert undilated.stride == 32 and undilated(images(1, 64, 64)).shape == (1, 64, 64, 64)


def test_from_pretrained_backbone_local_folder(tmp_path):
    from transformers import Dinov2Model

    torch.manual_seed(0)
    src = Dinov2Model(tiny_dinov2_config())
    src.save_pretrained(tmp_path / "dino")
    teacher = ImageTeacher.from_pretrained_backbone(tmp_path / "dino", local_files_only=True)
    for k, v in src.state_dict().items():
        assert torch.equal(teacher.backbone.state_dict()[k], v)
    assert not teacher.random_init and teacher.weights == f"local:{tmp_path / 'dino'}"
    with pytest.raises(OSError, match="could not load the 2D teacher"):
        ImageTeacher.from_pretrained_backbone(tmp_path / "missing", local_files_only=True)
    with pytest.raises(ValueError, match="does not take one"):
        ImageTeacher.from_pretrained_backbone(tmp_path / "dino", checkpoint=tmp_path / "x.pth.tar")


def torchvision_resnet_shapes(embedding, hidden_sizes, depths):
    """torchvision Bottleneck ResNet state-dict shapes, written from torchvision's layout rules."""
    shapes = {"conv1.weight": (embedding, 3, 7, 7)}
    bn = lambda name, c: {f"{name}.{p}": (c,) for p in ("weight", "bias", "running_mean", "running_var")} | {
        f"{name}.num_batches_tracked": ()}
    shapes |= bn("bn1", embedding)
    inplanes = embedding
    for i, (out, depth) in enumerate(zip(hidden_sizes, depths), start=1):
        planes = out // 4
        for j in range(depth):
            p = f"layer{i}.{j}"
            shapes[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            shapes[f"{p}.conv3.weight"] = (out, planes, 1, 1)
            shapes |= bn(f"{p}.bn1", planes) | bn(f"{p}.bn2", planes) | bn(f"{p}.bn3", out)
            if j == 0:
                shapes[f"{p}.downsample.0.weight"] = (out, inplanes, 1, 1)
                shapes |= bn(f"{p}.downsample.1", out)
            inplanes = out
    shapes["fc.weight"], shapes["fc.bias"] = (1000, hidden_sizes[-1]), (1000,)
    return shapes


def test_torchvision_resnet_keys_map_onto_transformers():
    from transformers import ResNetModel

    cfg = tiny_resnet_config()
    shapes = torchvision_resnet_shapes(8, [16, 32, 64, 128], [1, 2, 1, 1])
    g = torch.Generator().manual_seed(0)
    sd = {f"module.encoder_q.{k}": (torch.randn(s, generator=g) if s else torch.tensor(3)) for k, s in shapes.items()}
    mapped = resnet_state_dict_from_torchvision(sd, prefix="module.encoder_q.")
    model = ResNetModel(cfg)
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    assert not unexpected and not missing  # every tensor finds its place, shapes checked by load_state_dict
    assert torch.equal(model.embedder.embedder.convolution.weight, sd["module.encoder_q.conv1.weight"])
    assert torch.equal(model.encoder.stages[1].layers[1].layer[2].normalization.running_var,
                       sd["module.encoder_q.layer2.1.bn3.running_var"])
    with pytest.raises(KeyError, match="avgpool"):
        resnet_state_dict_from_torchvision({"avgpool.weight": torch.zeros(1)})


def torchvision_resnet_forward(sd, x, depths):
    """torchvision's Bottleneck ResNet (v1.5) forward written from its definition with functional ops, from a
    torchvision-layout state dict: conv1 7x7/2 + bn + relu + maxpool 3/2; per block conv1 1x1, conv2 3x3 (stride of
    the stage's first block), conv3 1x1, bn after each, downsample 1x1 conv + bn, relu after the sum."""
    def bn(t, name):
        return F.batch_norm(t, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"],
                            sd[f"{name}.bias"], training=False, eps=1e-5)

    x = F.relu(bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    for i, depth in enumerate(depths, start=1):
        for j in range(depth):
            p = f"layer{i}.{j}"
            stride = 2 if (j == 0 and i > 1) else 1
            out = F.relu(bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), f"{p}.bn1"))
            out = F.relu(bn(F.conv2d(out, sd[f"{p}.conv2.weight"], stride=stride, padding=1), f"{p}.bn2"))
            out = bn(F.conv2d(out, sd[f"{p}.conv3.weight"]), f"{p}.bn3")
            if f"{p}.downsample.0.weight" in sd:
                x = bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1")
            x = F.relu(out + x)
    return x


def fake_moco_checkpoint(path, embedding, hidden, depths, legacy=False, seed=0):
    """A checkpoint in the layout facebookresearch/moco's main_moco.py saves: {"epoch", "arch", "state_dict",
    "optimizer"}; state_dict of the DDP-wrapped MoCo module (moco/builder.py): module.encoder_q.* and
    module.encoder_k.* (torchvision ResNet, fc replaced by the v2 MLP fc.0 / fc.2), module.queue, module.queue_ptr."""
    g = torch.Generator().manual_seed(seed)
    shapes = torchvision_resnet_shapes(embedding, hidden, depths)
    del shapes["fc.weight"], shapes["fc.bias"]
    shapes |= {"fc.0.weight": (hidden[-1], hidden[-1]), "fc.0.bias": (hidden[-1],), "fc.2.weight": (128, hidden[-1]),
               "fc.2.bias": (128,)}
    q = {}
    for k, s in shapes.items():
        if k.endswith("num_batches_tracked"):
            q[k] = torch.tensor(1000)
        elif k.endswith("running_var"):
            q[k] = torch.rand(s, generator=g) + 0.5
        else:
            q[k] = torch.randn(s, generator=g) * (0.2 if k.endswith("weight") and len(s) == 4 else 0.1)
    state = {f"module.encoder_q.{k}": v for k, v in q.items()}
    state |= {f"module.encoder_k.{k}": v + 1 for k, v in q.items()}
    state |= {"module.queue": torch.randn(128, 16, generator=g), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    ckpt = {"epoch": 800, "arch": "resnet50", "state_dict": state,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.0, "momentum": 0.9, "params": [0, 1]}]}}
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    return q


@pytest.mark.parametrize("legacy", [False, True])
def test_moco_checkpoint_teacher_loads_the_query_encoder(tmp_path, legacy):
    from transformers import ResNetConfig

    depths, hidden = [1, 2, 1, 1], [16, 32, 64, 128]
    q = fake_moco_checkpoint(tmp_path / "moco.pth.tar", 8, hidden, depths, legacy=legacy)
    cfg = ResNetConfig(embedding_size=8, hidden_sizes=hidden, depths=depths, layer_type="bottleneck")
    undilated = ImageTeacher.from_moco_checkpoint(tmp_path / "moco.pth.tar", config=cfg, dilation=False)
    assert not undilated.random_init and undilated.weights == f"moco_v2:{tmp_path / 'moco.pth.tar'}"
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = torchvision_resnet_forward(q, x, depths)  # the query encoder, not encoder_k (which is q + 1)
        got = undilated.backbone(pixel_values=x).last_hidden_state
        assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4)
        dilated = ImageTeacher.from_moco_checkpoint(tmp_path / "moco.pth.tar", config=cfg)  # SLidR: dilated, stride 4
        assert dilated.stride == 4
        assert torch.allclose(dilated.backbone(pixel_values=x).last_hidden_state[..., ::8, ::8], ref, atol=1e-4,
                              rtol=1e-4)
    if not legacy:
        with pytest.raises(ValueError, match="do not fit the ResNet"):  # a ResNet-50 does not fit the tiny weights
            ImageTeacher.from_moco_checkpoint(tmp_path / "moco.pth.tar")


def test_moco_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=MOCO_V2_800EP_URL.replace(".", r"\.")):
        load_moco_state_dict(tmp_path / "moco_v2_800ep_pretrain.pth.tar")
    with pytest.raises(FileNotFoundError, match="facebookresearch/moco"):
        ImageTeacher.from_pretrained_backbone("resnet50", checkpoint=tmp_path / "nope.pth.tar")
    torch.save({"model": {}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="'state_dict'"):
        load_moco_state_dict(tmp_path / "other.pth")
    torch.save({"state_dict": {"module.encoder.conv1.weight": torch.zeros(1)}}, tmp_path / "pixpro.pth")
    with pytest.raises(ValueError, match="module.encoder_q"):
        load_moco_state_dict(tmp_path / "pixpro.pth")
    (tmp_path / "junk.pth.tar").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable MoCo checkpoint"):
        load_moco_state_dict(tmp_path / "junk.pth.tar")
    cfg = resnet50_config()  # torchvision's ResNet-50: v1.5, bottleneck, 64 -> 256..2048
    assert (cfg.embedding_size, cfg.hidden_sizes, list(cfg.depths), cfg.downsample_in_bottleneck) == \
        (64, [256, 512, 1024, 2048], [3, 4, 6, 3], False)


@pytest.fixture(scope="module")
def synthetic_data():
    from largead.data import get_dataset

    ds = get_dataset("synthetic", num_sequences=2, frames_per_sequence=2, num_cameras=2, image_size=(48, 80))
    frames = [ds[i] for i in range(len(ds))]
    train = camera_training_data(c for f in frames[:3] for c in f.cameras)
    test = camera_training_data(frames[3].cameras)
    return train, test, len(ds.class_names)


def linear_readout_accuracy(net, train, test, k):
    """Fit a linear classifier on frozen 1/4-resolution features; pixel accuracy on held-out images."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def feats_labels(data):
        x = (torch.from_numpy(data[0]).permute(0, 3, 1, 2).float() / 255 - mean) / std
        with torch.no_grad():
            f = net(x)
        y = torch.from_numpy(np.where(data[1] < 0, k, data[1])).long()[:, 1::4, 1::4]
        return f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]), y.reshape(-1)

    f, y = feats_labels(train)
    ft, yt = feats_labels(test)
    mu, sd = f.mean(0), f.std(0) + 1e-6
    f, ft = (f - mu) / sd, (ft - mu) / sd
    torch.manual_seed(0)
    lin = torch.nn.Linear(f.shape[1], k + 1)
    opt = torch.optim.Adam(lin.parameters(), lr=0.05)
    for _ in range(150):
        loss = F.cross_entropy(lin(f), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    majority = (yt == torch.bincount(y).argmax()).float().mean().item()
    return (lin(ft).argmax(1) == yt).float().mean().item(), majority


def test_synthetic_teacher_learns_semantics(synthetic_data):
    train, test, k = synthetic_data
    torch.manual_seed(0)
    untrained = SyntheticBackbone(k + 1).eval()
    net = train_synthetic_backbone(*train, num_classes=k, steps=30, batch_size=4, seed=0)
    acc, majority = linear_readout_accuracy(net, train, test, k)
    acc_untrained, _ = linear_readout_accuracy(untrained, train, test, k)
    assert acc > majority + 0.3, (acc, majority)
    assert acc > acc_untrained + 0.05, (acc, acc_untrained)


def test_synthetic_teacher_cache_roundtrip(tmp_path, synthetic_data):
    train, _, k = synthetic_data
    calls = []

    def data():
        calls.append(1)
        return train

    key = {"world": {"seed": 0, "image_size": [48, 80]}, "seed": 0}
    t1 = SyntheticTeacher.build(key, data, k, cache_dir=tmp_path, steps=2, batch_size=2)
    assert calls == [1] and t1.cache_path.parent == tmp_path and t1.cache_path.name.startswith("synthetic-")
    assert os.listdir(tmp_path) == [t1.cache_path.name]  # atomic: no temp file left behind

    def fail():
        raise AssertionError("cache miss: data() should not be called")

    t2 = SyntheticTeacher.build(key, fail, k, cache_dir=tmp_path, steps=2, batch_size=2)
    for name, v in t1.backbone.state_dict().items():
        assert torch.equal(t2.backbone.state_dict()[name], v)
    t3 = SyntheticTeacher.build({**key, "seed": 1}, data, k, cache_dir=tmp_path, steps=2, batch_size=2)
    assert t3.cache_path != t1.cache_path and calls == [1, 1]
    # a teacher like any other: frozen backbone, trainable head, (B, 64, H, W) unit features
    img = torch.from_numpy(train[0][:2]).permute(0, 3, 1, 2)
    out = t2(img)
    assert out.shape == (2, 64, 48, 80)
    assert torch.allclose(out.norm(dim=1), torch.ones(2, 48, 80), atol=1e-5)
    assert [p for p in t2.trainable_parameters()] == [t2.head.weight, t2.head.bias]
