"""Training entry points: pretraining, fine-tuning / linear probing, evaluation (importable; no side effects).

    from largead.training import pretrain, finetune, evaluate
    pretrain.main(pretrain.parse_args(["--config", "synthetic", "--output-dir", "runs/p"]))

Each module has ``parse_args(argv)``, ``main(args)`` and ``cli()``; the files in the repository's ``training/``
folder are thin launchers of ``cli()`` (``accelerate launch training/pretrain.py ...``), and ``python -m
largead.training.<name>`` / ``accelerate launch -m largead.training.<name>`` do the same from an installed package.
The YAML configs ship inside the package (:data:`CONFIG_DIR`, also reachable as ``training/configs`` in a source
checkout); ``--config`` takes a path or a config's name. The parts they share are :mod:`largead.trainer` (the
accelerate loop) and :mod:`largead.config` (typed configs).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from largead.errors import normalize_flags, run_cli

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
"""The packaged YAML configs: the generated zoo configs, their ``_base.yaml``, the downstream and synthetic ones."""


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every training entry point shares: resume, force, trailing ``key=value`` overrides."""
    parser.add_argument("--resume-from-checkpoint", default="latest",
                        help="'latest' (default: the newest checkpoint in the output folder, if any), 'none', or a "
                             "checkpoint folder / name checkpoint-<step>")
    parser.add_argument("--force", action="store_true", help="resume even if the config differs from run_config.json")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value (dotted keys), e.g. optim.lr=0.1")


def parse_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args`` after accepting underscore spellings of its flags (:func:`largead.errors.normalize_flags`)."""
    return parser.parse_args(normalize_flags(parser, argv))


__all__ = ["CONFIG_DIR", "add_common_arguments", "parse_cli", "run_cli"]
