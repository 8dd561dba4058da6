"""Fault injector for tests/training/test_faults.py: runs ``largead.training.pretrain.cli()`` with one fault.

    LARGEAD_FAULT='{"kind": "file", "step": 3, "file": "optimizer.bin"}' python tests/training/faults.py --config ...

Kinds (``step``: the optimiser step whose work the fault hits):

- ``file``: while checkpoint ``step`` is written, ``file`` is written, cut to half its size and the process is
  SIGKILLed (a kill in the middle of a checkpoint write);
- ``manifest``: SIGKILL when checkpoint ``step``'s files are written and its manifest is about to be;
- ``rename``: SIGKILL right after checkpoint ``step`` was renamed into place (before older ones are pruned);
- ``prune``: SIGKILL half-way through deleting an old checkpoint after checkpoint ``step`` was saved;
- ``log``: SIGKILL after writing half of step ``step``'s line of losses.jsonl;
- ``export``: SIGKILL after the encoder was written to its temporary folder, before the rename;
- ``timer``: SIGKILL after ``delay`` seconds, wherever the run is;
- ``slow``: no kill; each forward pass sleeps ``delay`` seconds (keeps a run alive while a test acts on it).

Not a test module; nothing here is imported by the package.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(fault: dict) -> None:
    import shutil

    import torch
    from accelerate.utils import other as acc_other

    from largead import trainer
    from largead.models.encoder import LargeADEncoder
    from largead.pretrain.model import PretrainModel
    from largead.runfolder import LossLog

    kind, step = fault["kind"], fault.get("step")
    current = {"step": None}
    save_checkpoint = trainer.save_checkpoint

    def tracked_save(acc, out, s, *args, **kwargs):
        current["step"] = s
        try:
            return save_checkpoint(acc, out, s, *args, **kwargs)
        finally:
            current["step"] = None

    trainer.save_checkpoint = tracked_save
    hit = lambda: current["step"] == step  # noqa: E731

    if kind == "file":
        def cut(writer):
            def wrapped(obj, f, *args, **kwargs):
                writer(obj, f, *args, **kwargs)
                if hit() and str(f).endswith(fault["file"]):
                    path = Path(f)
                    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
                    _kill()
            return wrapped

        torch.save = cut(torch.save)
        acc_other.safe_save_file = cut(acc_other.safe_save_file)
    elif kind == "manifest":
        write_manifest = trainer.write_manifest

        def killed_manifest(folder, *args, **kwargs):
            if hit():
                _kill()
            return write_manifest(folder, *args, **kwargs)

        trainer.write_manifest = killed_manifest
    elif kind == "rename":
        fsync_path = trainer.fsync_path

        def killed_fsync(path):
            fsync_path(path)
            if hit() and Path(path).name == "checkpoints":
                _kill()

        trainer.fsync_path = killed_fsync
    elif kind == "prune":
        rmtree = shutil.rmtree

        def killed_rmtree(path, *args, **kwargs):
            if hit() and Path(path).name.startswith(".old-checkpoint-"):
                files = sorted(p for p in Path(path).iterdir() if p.is_file())
                files[0].unlink()
                _kill()
            return rmtree(path, *args, **kwargs)

        shutil.rmtree = killed_rmtree
    elif kind == "log":
        append = LossLog.append

        def torn_append(self, record):
            if record["step"] == step and self.write:
                line = (json.dumps(record) + "\n").encode()
                with open(self.path, "ab") as fh:
                    fh.write(line[: len(line) // 2])
                _kill()
            return append(self, record)

        LossLog.append = torn_append
    elif kind == "export":
        save_pretrained = LargeADEncoder.save_pretrained

        def killed_export(self, folder, *args, **kwargs):
            save_pretrained(self, folder, *args, **kwargs)
            _kill()

        LargeADEncoder.save_pretrained = killed_export
    elif kind == "timer":
        threading.Timer(float(fault["delay"]), _kill).start()
    elif kind == "slow":
        forward = PretrainModel.forward

        def slow_forward(self, *args, **kwargs):
            time.sleep(float(fault["delay"]))
            return forward(self, *args, **kwargs)

        PretrainModel.forward = slow_forward
    else:
        raise ValueError(f"unknown fault kind {kind!r}")


if __name__ == "__main__":
    spec = os.environ.get("LARGEAD_FAULT")
    if spec:
        install(json.loads(spec))
    from largead.training.pretrain import cli

    cli()
