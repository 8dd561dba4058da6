#!/usr/bin/env python
"""Render one model card per zoo entry into model_cards/<name>.md (from largead/assets/model_card_template.md).

    python scripts/render_model_cards.py            # (re)write every card
    python scripts/render_model_cards.py --check    # exit 1 if a card is missing or stale (CI-friendly)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from largead.cards import render_card
from largead.fileio import atomic_write_text
from largead.zoo import REGISTRY


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "model_cards")
    parser.add_argument("--check", action="store_true", help="only verify that the cards on disk are up to date")
    args = parser.parse_args(argv)

    stale = []
    for info in REGISTRY.values():
        path = args.out / f"{info.short_name}.md"
        text = str(render_card(info))
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            atomic_write_text(path, text)
    if args.check:
        if stale:
            print(f"{len(stale)} model card(s) missing or stale, run scripts/render_model_cards.py: "
                  f"{', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''}", file=sys.stderr)
            return 1
        print(f"all {len(REGISTRY)} model cards are up to date")
        return 0
    print(f"wrote {len(REGISTRY)} model cards to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
