#!/usr/bin/env python
"""Launcher of :mod:`largead.training.finetune` (the code, its options and its docs live there):

    accelerate launch training/finetune.py --help
"""

from largead.training.finetune import cli

if __name__ == "__main__":
    cli()
