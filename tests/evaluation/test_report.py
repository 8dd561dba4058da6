"""Results JSON (card updates: tests/test_cards.py)."""

from __future__ import annotations

import json

from largead.evaluation.report import write_results


def test_results_json_writes_nan_as_null(tmp_path) -> None:
    p = write_results(tmp_path / "r.json", {"miou": float("nan"), "per": {"a": 1.0}})
    assert json.loads(p.read_text()) == {"miou": None, "per": {"a": 1.0}}
