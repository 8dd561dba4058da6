#!/usr/bin/env python
"""Validate a largead checkpoint folder and publish it on the Hugging Face Hub.

    python scripts/push_to_hub.py outputs/pretrain/final largead/minkunet34-seem-nkw [--private] [--revision v1]
    python scripts/push_to_hub.py FOLDER REPO_ID --dry-run     # validate only

The folder must hold config.json, model.safetensors and README.md (a model card with library_name: largead); it is
reloaded strictly and run on a probe scan before anything is uploaded. Log in first (`huggingface-cli login`) or
pass --token / set HF_TOKEN.
"""

from __future__ import annotations

import argparse
import sys

from largead.hub import InvalidCheckpointFolder, push_folder, validate_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("repo_id")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--revision", default=None, help="branch to upload to (created if missing)")
    parser.add_argument("--commit-message", default=None)
    parser.add_argument("--token", default=None)
    parser.add_argument("--dry-run", action="store_true", help="validate the folder, upload nothing")
    args = parser.parse_args(argv)

    if args.dry_run:
        report = validate_folder(args.folder)
        if not report.ok:
            print(f"push_to_hub: {args.folder} is not publishable:", file=sys.stderr)
            for problem in report.problems:
                print(f"  - {problem}", file=sys.stderr)
            return 1
        print(f"{args.folder}: valid ({report.num_parameters / 1e6:.1f}M parameters, {report.feature_dim}-d features)")
        return 0
    try:
        url = push_folder(args.folder, args.repo_id, private=args.private, revision=args.revision,
                          commit_message=args.commit_message, token=args.token)
    except InvalidCheckpointFolder as err:
        print(f"push_to_hub: {err}", file=sys.stderr)
        return 1
    print(f"uploaded {args.folder} to {args.repo_id}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
