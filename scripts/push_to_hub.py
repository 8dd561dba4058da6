#!/usr/bin/env python
"""Validate a largead checkpoint folder and publish it on the Hugging Face Hub.

    python scripts/push_to_hub.py outputs/pretrain/final largead/minkunet34-seem-nkw [--private] [--revision v1]
    python scripts/push_to_hub.py FOLDER REPO_ID --dry-run     # validate, print the card as it would be pushed

The folder must hold config.json, model.safetensors and README.md (a model card with library_name: largead); it is
reloaded strictly and run on a probe scan before anything is uploaded. The card is pushed with REPO_ID written in
(its model-index name, title and usage snippet); the folder itself is not changed. Log in first (`hf auth login`)
or pass --token / set HF_TOKEN. Errors are one line (LARGEAD_DEBUG=1 for a traceback).
"""

from __future__ import annotations

import argparse
import sys

from largead.errors import normalize_flags, run_cli
from largead.hub import InvalidCheckpointFolder, card_for_push, push_folder, validate_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="push_to_hub.py", description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("repo_id")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--revision", default=None, help="branch to upload to (created if missing)")
    parser.add_argument("--commit-message", default=None)
    parser.add_argument("--token", default=None)
    parser.add_argument("--dry-run", action="store_true", help="validate the folder, upload nothing")
    args = parser.parse_args(normalize_flags(parser, argv))

    if args.dry_run:
        report = validate_folder(args.folder)
        if not report.ok:
            raise InvalidCheckpointFolder(f"{args.folder} is not publishable: " + "; ".join(report.problems))
        print(card_for_push(args.folder, args.repo_id))
        print(f"{args.folder}: valid ({report.num_parameters / 1e6:.1f}M parameters, {report.feature_dim}-d features);"
              f" the card above is what would be pushed to {args.repo_id}", file=sys.stderr)
        return 0
    url = push_folder(args.folder, args.repo_id, private=args.private, revision=args.revision,
                      commit_message=args.commit_message, token=args.token)
    print(f"uploaded {args.folder} to {args.repo_id}: {url}")
    return 0


if __name__ == "__main__":
    run_cli("push_to_hub.py", main)
