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

    def create_commit(self, **kw):
        self.calls.append(("create_commit", kw))

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
    assert names == ["create_repo", "create_branch", "create_commit"]
    commit = api.calls[-1][1]
    assert commit["repo_id"] == "me/encoder" and commit["revision"] == "v1"
    assert sorted(op.path_in_repo for op in commit["operations"]) == ["README.md", "config.json", "model.safetensors"]


def test_push_writes_the_real_repo_id_into_the_card_not_into_the_folder(good_folder, tmp_path):
    import shutil

    from huggingface_hub import ModelCard

    from largead.cards import PLACEHOLDER_REPO

    folder = tmp_path / "placeholder"
    shutil.copytree(good_folder, folder)
    write_card(folder, {"note": "test"}, results=[{"dataset": "synthetic", "split": "val", "miou": 0.3}])
    before = (folder / "README.md").read_text()
    assert PLACEHOLDER_REPO in before
    api = FakeApi()
    push_folder(folder, "someone/real-name", api=api)
    (card_op,) = [op for op in api.calls[-1][1]["operations"] if op.path_in_repo == "README.md"]
    pushed = card_op.path_or_fileobj.read().decode() if hasattr(card_op.path_or_fileobj, "read") else \
        bytes(card_op.path_or_fileobj).decode()
    assert PLACEHOLDER_REPO not in pushed and 'from_pretrained("someone/real-name")' in pushed
    assert ModelCard(pushed).data.model_name == "someone/real-name"
    assert (folder / "README.md").read_text() == before  # the local folder is untouched


def _script(*args, env=None):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "push_to_hub.py"
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, check=False)


def test_script_dry_run_prints_the_card_to_be_pushed(good_folder):
    res = _script(str(good_folder), "org/name", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert 'from_pretrained("org/name")' in res.stdout and "model_name: org/name" not in res.stderr
    assert "valid (" in res.stderr


@pytest.mark.parametrize("case", ["offline", "missing folder", "bad card"])
def test_script_errors_are_one_line(good_folder, tmp_path, case):
    if case == "offline":
        args, env = [str(good_folder), "org/name"], {"HF_HUB_OFFLINE": "1", "HF_TOKEN": "hf_fake"}
    elif case == "missing folder":
        args, env = [str(tmp_path / "nope"), "org/name"], {}
    else:
        (tmp_path / "README.md").write_text("no metadata")
        args, env = [str(tmp_path), "org/name"], {}
    res = _script(*args, env=env)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1 and lines[0].startswith("push_to_hub.py: error:"), res.stderr
    assert "Traceback" not in res.stderr
    if case == "offline":
        assert "org/name" in lines[0] and ("reach" in lines[0] or "offline" in lines[0].lower())


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
