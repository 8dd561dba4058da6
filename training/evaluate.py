#!/usr/bin/env python
"""Launcher of :mod:`largead.training.evaluate` (the code, its options and its docs live there):

    accelerate launch training/evaluate.py --help
"""

from largead.training.evaluate import cli

if __name__ == "__main__":
    cli()
