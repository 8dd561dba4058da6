"""Publishing: folder validation and the upload call at the huggingface_hub API boundary (no Hub is reachable)."""

import json

import pytest

from largead import LargeADConfig, LargeADEncoder
from largead.cards import write_card
from largead.hub import InvalidCheckpointFolder, probe_scan, push_folder, validate_folder


class FakeApi:
    """Records the calls push_folder makes on huggingface_hub.HfApi."""

    def __init__(self):
        self.calls = []

    def create_repo(self, **kw):
        self.calls.append(("create_repo", kw))

    def create_branch(self, **kw):
        self.calls.append(("create_branch", kw))

    def upload_folder(self, **kw):
        self.calls.append(("upload_folder", kw))

        class Info:
            commit_url = f"https://hub.example/{kw['repo_id']}/commit/abc"

        return Info()


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    torch_seed = 0
    import torch

    torch.manual_seed(torch_seed)
    LargeADEncoder(LargeADConfig()).save_pretrained(folder)
    write_card(folder, {"note": "test"}, repo_id="me/encoder")
    return folder


def test_probe_scan_is_deterministic():
    a, b = probe_scan(seed=3), probe_scan(seed=3)
    assert a.shape == (4000, 4) and a.dtype.name == "float32" and (a == b).all()


def test_valid_folder_passes(good_folder):
    report = validate_folder(good_folder)
    assert report.ok, report.problems
    assert report.feature_dim == 64
    assert 37.5e6 < report.num_parameters < 38.1e6


def test_push_uploads_after_validation(good_folder):
    api = FakeApi()
    url = push_folder(good_folder, "me/encoder", revision="v1", api=api)
    assert url.endswith("/me/encoder/commit/abc")
    names = [c[0] for c in api.calls]
    assert names == ["create_repo", "create_branch", "upload_folder"]
    upload = api.calls[-1][1]
    assert upload["repo_id"] == "me/encoder" and upload["revision"] == "v1"
    assert upload["folder_path"] == str(good_folder) and "*.safetensors" in upload["allow_patterns"]


def test_missing_card_is_refused_and_nothing_uploaded(good_folder, tmp_path):
    folder = tmp_path / "nocard"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((good_folder / name).read_bytes())
    api = FakeApi()
    with pytest.raises(InvalidCheckpointFolder, match=r"README\.md: missing"):
        push_folder(folder, "me/encoder", api=api)
    assert api.calls == []


def test_card_without_library_name_is_refused(good_folder, tmp_path):
    folder = tmp_path / "badcard"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((good_folder / name).read_bytes())
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# hi\n")
    report = validate_folder(folder)
    assert any("library_name: largead" in p for p in report.problems)


def test_mismatched_weights_fail_strict_reload(good_folder, tmp_path):
    folder = tmp_path / "wrongcfg"
    folder.mkdir()
    for name in ("model.safetensors", "README.md"):
        (folder / name).write_bytes((good_folder / name).read_bytes())
    cfg = json.loads((good_folder / "config.json").read_text())
    cfg["out_channels"] = 32  # weights were saved with 64 outputs
    (folder / "config.json").write_text(json.dumps(cfg))
    report = validate_folder(folder)
    assert not report.ok and "strict reload failed" in report.problems[0] and "final" in report.problems[0]


def test_corrupt_config_json_is_reported(good_folder, tmp_path):
    folder = tmp_path / "badjson"
    folder.mkdir()
    for name in ("model.safetensors", "README.md"):
        (folder / name).write_bytes((good_folder / name).read_bytes())
    (folder / "config.json").write_text("{not json")
    report = validate_folder(folder)
    assert any("config.json: not valid JSON" in p for p in report.problems)
