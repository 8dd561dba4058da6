#!/usr/bin/env python
"""Launcher of :mod:`largead.training.pretrain` (the code, its options and its docs live there):

    accelerate launch training/pretrain.py --help
"""

from largead.training.pretrain import cli

if __name__ == "__main__":
    cli()
