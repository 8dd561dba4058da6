"""Tests of largead.config: YAML + base inheritance, overrides, typed validation, config diffs, run-config guard."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

import pytest

from largead import config as C


@dataclass
class _Inner:
    lr: float
    name: Literal["a", "b"] = "a"


@dataclass
class _Cfg:
    inner: _Inner
    steps: int = 3
    sizes: tuple[float, float, float] = (0.1, 1.0, 0.1)
    tags: list[str] = field(default_factory=list)


def _write(path, text):
    path.write_text(text)
    return path


def test_load_config_base_overrides_and_types(tmp_path):
    _write(tmp_path / "base.yaml", "inner: {lr: 0.5}\nsteps: 10\n")
    child = _write(tmp_path / "child.yaml", "base: base.yaml\ninner: {name: b}\nsizes: [1, 2, 3]\n")
    cfg = C.load_config(_Cfg, child, ["inner.lr=0.25", "tags=[x, y]", "sizes.1=5"])
    assert cfg == _Cfg(inner=_Inner(lr=0.25, name="b"), steps=10, sizes=(1.0, 5.0, 3.0), tags=["x", "y"])
    with pytest.raises(C.ConfigError, match="index 7 is out of range"):
        C.load_config(_Cfg, child, ["sizes.7=1"])
    assert C.config_to_dict(cfg)["sizes"] == [1.0, 5.0, 3.0]


@pytest.mark.parametrize("text,override,needle", [
    ("inner: {lr: 0.5}\nstep: 3\n", [], "'step'"),  # unknown key, named
    ("inner: {lr: 0.5, lrr: 1}\n", [], "'inner.lrr'"),  # unknown nested key, dotted
    ("inner: {name: a}\n", [], "missing required key 'inner.lr'"),
    ("inner: {lr: fast}\n", [], "'inner.lr' must be a number"),
    ("inner: {lr: 0.5}\n", ["inner.name=c"], "'inner.name' must be one of"),
    ("inner: {lr: 0.5}\nsizes: [1, 2]\n", [], "'sizes' must be a list of 3 items"),
    ("inner: {lr: 0.5}\nsteps: 2.5\n", [], "'steps' must be an integer"),
])
def test_load_config_errors_name_key_and_file(tmp_path, text, override, needle):
    path = _write(tmp_path / "bad.yaml", text)
    with pytest.raises(C.ConfigError) as err:
        C.load_config(_Cfg, path, override)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_bad_override_syntax():
    with pytest.raises(C.ConfigError, match="key=value"):
        C.parse_overrides(["optim.lr"])


@pytest.mark.parametrize("value", [1e-05, 0.2, 3, True, None, "a b", [48, 80], {"seed": 0, "lr": 2.5e-4,
                                                                             "size": [8, 8], "name": "x"}])
def test_format_override_reads_back(value):
    text = C.format_override(value)
    assert "\n" not in text
    assert C.parse_overrides([f"k={text}"]) == {"k": value}


def test_resolve_config_path(tmp_path):
    folder = tmp_path / "training" / "configs"
    folder.mkdir(parents=True)
    for stem in ("finetune-a", "linear-probe-b", "other", "_base"):
        (folder / f"{stem}.yaml").write_text("x: 1\n")
    elsewhere = _write(tmp_path / "mine.yaml", "x: 2\n")
    assert C.resolve_config_path(str(elsewhere), folder) == elsewhere
    assert C.resolve_config_path("other", folder) == folder / "other.yaml"
    assert C.resolve_config_path("other.yaml", folder) == folder / "other.yaml"
    with pytest.raises(FileNotFoundError, match=r"neither a file nor one of training/configs: finetune-a, "
                                                r"linear-probe-b, other$"):
        C.resolve_config_path("nope", folder)
    with pytest.raises(FileNotFoundError, match=r"training/configs: finetune-a, linear-probe-b$"):
        C.resolve_config_path("nope", folder, prefixes=("finetune-", "linear-probe-"))


def test_run_config_guard(tmp_path):
    C.check_run_config(tmp_path, {"a": {"b": 1, "c": 2}, "d": 3})
    C.check_run_config(tmp_path, {"a": {"b": 1, "c": 2}, "d": 3})  # identical: fine
    with pytest.raises(C.ConfigMismatchError) as err:
        C.check_run_config(tmp_path, {"a": {"b": 5, "c": 2}, "e": 3})
    msg = str(err.value)
    assert "3 key(s)" in msg and "a.b: 1 -> 5" in msg and "'d'" not in msg.split(":")[0]
    assert C.config_diff({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 5, "c": 2}, "e": 3}) == ["a.b", "d", "e"]
    C.check_run_config(tmp_path, {"a": {"b": 5}}, force=True)
    C.check_run_config(tmp_path, {"a": {"b": 5}})  # the forced config was stored


def test_config_diff_names_leaf_keys_inside_lists():
    old = {"data": [{"name": "nuscenes", "root": "data/nuscenes"}, {"name": "waymo", "root": "w"}], "x": [1, 2]}
    new = {"data": [{"name": "nuscenes", "root": "/real/nuscenes"}, {"name": "waymo", "root": "w"}], "x": [1, 3]}
    assert C.config_diff(old, new) == ["data.0.root", "x"]  # a list of scalars is one value
    assert C.config_diff(old, {**old, "data": old["data"][:1]}) == ["data.1.name", "data.1.root"]


def test_run_config_guard_names_the_leaf_and_never_rewrites_an_unchanged_file(tmp_path):
    cfg = {"data": [{"root": "data/nuscenes"}], "seed": 0}
    C.check_run_config(tmp_path, cfg)
    path = tmp_path / C.RUN_CONFIG
    before = path.stat().st_mtime_ns
    path.chmod(0o444)  # a read-only file must not matter when nothing changes
    C.check_run_config(tmp_path, json.loads(json.dumps(cfg)))
    assert path.stat().st_mtime_ns == before
    with pytest.raises(C.ConfigMismatchError, match=r"1 key\(s\): data\.0\.root: 'data/nuscenes' -> '/x'"):
        C.check_run_config(tmp_path, {"data": [{"root": "/x"}], "seed": 0})
    C.check_run_config(tmp_path, {"data": [{"root": "/x"}], "seed": 0}, write=False, force=True)
    assert json.loads(path.read_text()) == cfg  # write=False validates only


@pytest.mark.parametrize("item,needle", [
    ("optim.lr", "must look like key=value"),
    ("=3", "must look like key=value"),
    ("a..b=1", "must look like key=value"),
    ("k=[1, 2", "not valid YAML"),
])
def test_parse_overrides_errors_name_the_flag(item, needle):
    with pytest.raises(C.ConfigError, match=needle) as err:
        C.parse_overrides([item], what="--option")
    assert str(err.value).startswith("--option ")


def test_parse_overrides_nested_and_conflicts():
    assert C.parse_overrides(["a.b=1", "a.c=[x]", "d=null"]) == {"a": {"b": 1, "c": ["x"]}, "d": None}
    with pytest.raises(C.ConfigError, match="conflicts"):
        C.parse_overrides(["a=1", "a.b=2"])


def test_typed_fields_are_not_truthiness():
    @dataclass
    class _Flags:
        on: bool = True
        n: int = 1

    with pytest.raises(C.ConfigError, match="'on' must be true or false"):
        C.from_dict(_Flags, {"on": "no"}, source="f.json")
    with pytest.raises(C.ConfigError, match="'n' must be an integer"):
        C.from_dict(_Flags, {"n": "1"}, source="f.json")
    with pytest.raises(C.ConfigError, match="f.json: top level must be a mapping, got list"):
        C.from_dict(_Flags, [1], source="f.json")


def test_yaml_no_is_the_literal_no_where_it_is_a_choice():
    """YAML 1.1 reads an unquoted ``no`` as ``False``: ``mixed_precision: no`` / ``train.mixed_precision=no`` must
    still mean the choice "no" (and a bool is still refused where neither "no" nor "yes" is a choice)."""
    from largead.training.pretrain import load_pretrain_config

    cfg = load_pretrain_config("synthetic-tiny", ["train.mixed_precision=no"])
    assert cfg.train.mixed_precision == "no"
    assert load_pretrain_config("synthetic-tiny", ["train.mixed_precision=bf16"]).train.mixed_precision == "bf16"
    assert C.coerce(False, Literal["no", "bf16"], "k", "f") == "no"
    with pytest.raises(C.ConfigError, match="must be one of"):
        C.coerce(False, Literal["a", "b"], "k", "f")
