#!/usr/bin/env python
"""Launcher of :mod:`largead.superpixels.generate` (the code, its options and its docs live there):

    python scripts/generate_superpixels.py --help
"""

import sys

from largead.superpixels.generate import main

if __name__ == "__main__":
    sys.exit(main())
