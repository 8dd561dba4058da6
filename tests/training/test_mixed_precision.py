"""``train.mixed_precision: bf16`` (pretraining) and ``mixed_precision: bf16`` (fine-tuning) on CPU through accelerate:
the networks run under ``torch.autocast("cpu", torch.bfloat16)`` (the sparse engine included, forward and backward),
the loss terms are computed in fp32 and finite, and what is saved (encoder, segmentation model, checkpoints) is
float32."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from largead.models.heads import SegmentationModel
from largead.training import CONFIG_DIR as CONFIGS
from largead.training import finetune, pretrain
from tests.training.test_finetune import TINY


def _float_dtypes(path: Path) -> set[torch.dtype]:
    return {t.dtype for t in load_file(str(path)).values() if t.is_floating_point()}


def test_bf16_pretraining_runs_in_bf16_and_exports_float32(tmp_path, monkeypatch):
    from largead.pretrain.model import PretrainModel

    monkeypatch.setenv("LARGEAD_CACHE", str(tmp_path / "cache"))
    seen: dict[str, object] = {}

    def spy(self, batch, progress=None):  # the dtype the sparse engine computes in under the run's autocast
        hook = self.encoder.conv0p1s1.register_forward_hook(lambda m, i, o: seen.update(conv=o.F.dtype))
        try:
            terms = forward(self, batch, progress)
        finally:
            hook.remove()
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        seen["loss"] = terms["loss"].dtype
        return terms

    forward = PretrainModel.forward
    monkeypatch.setattr(PretrainModel, "forward", spy)
    out = tmp_path / "run"
    res = pretrain.main(pretrain.parse_args(["--config", "synthetic-tiny", "--output-dir", str(out), "--max-steps", "2",
                                             "train.mixed_precision=bf16", "model.backbone=minkunet14"]))
    assert seen == {"conv": torch.bfloat16, "autocast": True, "loss": torch.float32}
    log = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and len(res["losses"]) == 2
    for r in log:
        assert all(math.isfinite(r[k]) for k in ("loss", "vfm", "tmp", "p2s")), r
        assert r["vfm"] > 0 and r["tmp"] > 0
    assert _float_dtypes(out / "encoder" / "model.safetensors") == {torch.float32}
    assert _float_dtypes(out / "checkpoints" / "checkpoint-2" / "model.safetensors") == {torch.float32}


def test_bf16_finetuning_step_exports_float32(tmp_path, monkeypatch):
    from largead.models.encoder import LargeADConfig, LargeADEncoder

    seen: list[tuple[bool, torch.dtype]] = []
    inner = SegmentationModel.forward

    def spy(self, *args, **kwargs):  # the dtype the sparse engine computes in under the run's autocast
        hook = self.encoder.conv0p1s1.register_forward_hook(
            lambda m, i, o: seen.append((torch.is_autocast_enabled("cpu"), o.F.dtype)))
        try:
            return inner(self, *args, **kwargs)
        finally:
            hook.remove()

    monkeypatch.setattr(SegmentationModel, "forward", spy)
    pre = LargeADEncoder(LargeADConfig(backbone="minkunet14"))
    pre.save_pretrained(tmp_path / "pre")
    final = finetune.main(finetune.parse_args(["--config", str(CONFIGS / "finetune-synthetic.yaml"), "--output_dir",
                                               str(tmp_path / "ft"), "--pretrained", str(tmp_path / "pre"),
                                               "max_steps=1", "mixed_precision=bf16", *TINY]))
    assert seen and seen[0] == (True, torch.bfloat16)  # the network ran under bf16 autocast
    meta = json.loads((final / "segmentation.json").read_text())
    assert meta["steps"] == 1
    files = sorted(final.glob("*.safetensors"))
    assert files and all(_float_dtypes(f) == {torch.float32} for f in files)
    model = SegmentationModel.from_pretrained(final)
    state = model.encoder.state_dict()
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    assert not torch.equal(state["conv0p1s1.kernel"], pre.state_dict()["conv0p1s1.kernel"])  # it trained
