"""Convert a SLidR/Seal MinkowskiEngine checkpoint into a Hub-ready largead folder.

    python scripts/convert_checkpoint.py minkunet_slidr_1gpu.pt out/minkunet34-slidr

writes ``OUT_DIR/config.json`` + ``OUT_DIR/model.safetensors`` (+ a default ``README.md`` model card) and checks that
the folder reloads strictly with identical weights. See :func:`largead.load_official_checkpoint` for the layouts read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="checkpoint file (.pt/.pth/.ckpt)")
    parser.add_argument("out_dir", type=Path, help="output folder (created)")
    parser.add_argument("--config", type=Path, default=None,
                        help="config.json of the LargeADConfig to build (default: derived from the checkpoint)")
    parser.add_argument("--unsafe-pickle", action="store_true",
                        help="load with torch.load(weights_only=False); only for files you trust")
    args = parser.parse_args(argv)

    from largead.models.convert import load_official_checkpoint
    from largead.models.encoder import (
        CheckpointMismatchError,
        LargeADConfig,
        LargeADEncoder,
    )

    try:
        config = LargeADConfig.load(args.config) if args.config else None
        encoder = load_official_checkpoint(args.src, config, weights_only=not args.unsafe_pickle)
    except (FileNotFoundError, CheckpointMismatchError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    encoder.save_pretrained(args.out_dir)
    reloaded = LargeADEncoder.from_pretrained(args.out_dir)
    before, after = encoder.state_dict(), reloaded.state_dict()
    if any(not torch.equal(before[k], after[k]) for k in before):
        print(f"error: {args.out_dir} does not reload to the same weights", file=sys.stderr)
        return 1
    c = encoder.config
    n = sum(p.numel() for p in encoder.parameters())
    print(f"wrote {args.out_dir}: {c.backbone}, in={c.in_channels}, out={c.out_channels}, {n / 1e6:.2f}M parameters, "
          f"voxel_size={c.voxel_size}, cylindrical={c.cylindrical}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
