"""The zoo registry: names, aliases, resolution, paper numbers."""

import itertools

import pytest

from largead import zoo


def test_every_combination_is_registered():
    names = set(zoo.list_models())
    assert "largead/minkunet34-seem-nkw" in names
    assert "largead/minkunet34-random" in names
    for source, data, teacher in itertools.product(zoo.SOURCES, zoo.DATA, zoo.TEACHERS):
        short = f"minkunet34-{source}-{data}" + ("" if teacher == zoo.DEFAULT_TEACHER else f"-{teacher}")
        assert f"largead/{short}" in names, short
    # 5 sources x 4 data x 4 teachers + the random baseline; the default teacher has no suffix (no duplicates)
    assert len(names) == 5 * 4 * 4 + 1


def test_default_teacher_alias_resolves_to_the_unsuffixed_name():
    assert zoo.model_info("largead/minkunet34-seem-nkw-vit-b").name == "largead/minkunet34-seem-nkw"
    assert zoo.model_info("minkunet34-seem-nkw").teacher == "vit-b"
    assert "largead/minkunet34-seem-nkw-vit-b" not in zoo.list_models()


def test_entry_metadata():
    info = zoo.model_info("largead/minkunet34-seem-nkw")
    assert info.pretraining_datasets == ("nuscenes", "semantickitti", "waymo")
    assert info.config.voxel_size == (0.1, 1.0, 0.1) and info.config.cylindrical
    assert info.config.in_channels == 1 and info.config.out_channels == 64
    assert info.config_file == "training/configs/minkunet34-seem-nkw.yaml"
    assert not info.published
    lp = [r for r in info.paper_results if r.protocol == "linear_probe" and r.dataset == "nuscenes"]
    assert [r.miou for r in lp] == [47.84]


@pytest.mark.parametrize(
    "name, lp",
    [("minkunet34-random", 8.10), ("minkunet34-slic-n-resnet50", 38.80), ("minkunet34-seem-n-resnet50", 44.95),
     ("minkunet34-seem-n-vit-s", 45.16), ("minkunet34-seem-n", 46.59), ("minkunet34-seem-n-vit-l", 46.81)],
)
def test_paper_linear_probe_numbers(name, lp):
    rows = [r for r in zoo.model_info(name).paper_results if r.protocol == "linear_probe"]
    assert len(rows) == 1 and rows[0].miou == pytest.approx(lp) and rows[0].dataset == "nuscenes"


def test_random_baseline_finetune_row():
    ft = {r.fraction: r.miou for r in zoo.model_info("minkunet34-random").paper_results
          if r.protocol == "finetune" and r.dataset == "nuscenes"}
    assert ft == {1: 30.30, 5: 47.84, 10: 56.15, 25: 65.48, 100: 74.66}


def test_filter_glob():
    got = zoo.list_models("*seem-nkw*")
    assert got == sorted(got) and len(got) == 4 and all("seem-nkw" in n for n in got)
    assert zoo.list_models("largead/minkunet34-random") == ["largead/minkunet34-random"]


def test_unknown_name_suggests_closest():
    with pytest.raises(KeyError) as exc:
        zoo.model_info("minkunet34-seam-nkw")
    msg = str(exc.value)
    assert "unknown model 'minkunet34-seam-nkw'" in msg and "largead/minkunet34-seem-nkw" in msg


@pytest.mark.parametrize(
    "typed, expected",
    [
        ("minkunet34-seem-nkw", ("largead/minkunet34-seem-nkw", None)),
        ("largead/minkunet34-seem-nkw@v1.0", ("largead/minkunet34-seem-nkw", "v1.0")),
        ("hf-hub:largead/minkunet34-seem-nkw-vit-b@main", ("largead/minkunet34-seem-nkw", "main")),
        ("someone/their-encoder", ("someone/their-encoder", None)),
    ],
)
def test_resolve(typed, expected):
    assert zoo.resolve(typed) == expected


def test_resolve_rejects_unknown_short_name():
    with pytest.raises(zoo.UnknownModelError, match="Closest known names"):
        zoo.resolve("minkunet34-seem-nwk")


def test_encoder_config_fields():
    cfg = zoo.encoder_config("minkunet34-sam-k-vit-s")
    d = cfg.to_dict()
    assert {k: d[k] for k in ("backbone", "in_channels", "out_channels", "feature_mode", "voxel_size",
                              "cylindrical", "normalize_output", "bn_momentum", "block_bn_momentum")} == {
        "backbone": "minkunet34", "in_channels": 1, "out_channels": 64, "feature_mode": "intensity",
        "voxel_size": [0.1, 1.0, 0.1], "cylindrical": True, "normalize_output": True, "bn_momentum": 0.05,
        "block_bn_momentum": 0.1}  # SLidR's MinkUNet-34 pretraining encoder (config/slidr_minkunet.yaml)
    cfg.out_channels = 3  # a copy: the zoo entry is untouched
    assert zoo.model_info("minkunet34-sam-k-vit-s").config.out_channels == 64


def test_create_encoder_builds_every_entry_from_its_config():
    import torch

    from largead import LargeADEncoder, create_encoder

    n_params = None
    for name in zoo.list_models():
        info = zoo.model_info(name)
        with torch.device("meta"):  # the architecture without allocating 81 x 38 M weights
            enc = create_encoder(name, pretrained=False)
        assert isinstance(enc, LargeADEncoder) and enc.config == info.config, name
        assert enc.final.kernel.shape[-1] == info.config.out_channels
        count = sum(p.numel() for p in enc.parameters())
        assert n_params in (None, count)
        n_params = count
        if name == "largead/minkunet34-random":
            assert count == 37_849_184  # SLidR's Res16UNet34C, in 1, out 64
    torch.manual_seed(0)
    a = create_encoder("minkunet34-seem-nkw").state_dict()
    torch.manual_seed(0)
    b = create_encoder("largead/minkunet34-seem-nkw-vit-b").state_dict()  # alias, same architecture and seed
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(TypeError, match="takes no loading options"):
        create_encoder("minkunet34-seem-nkw", revision="main")
    with pytest.raises(zoo.UnknownModelError, match="Closest known names"):
        create_encoder("minkunet34-seem-nwk")
