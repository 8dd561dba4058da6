"""The registry against docs/datasets.md: every registered reader is documented with its real classes and splits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from largead.data import dataset_class, get_dataset, list_datasets

DOC = Path(__file__).resolve().parents[2] / "docs" / "datasets.md"


def _tables() -> list[list[str]]:
    """The markdown tables of the document, each a list of its lines."""
    tables, current = [], []
    for ln in DOC.read_text().splitlines():
        if ln.startswith("|"):
            current.append(ln)
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


def _doc_table() -> dict[str, dict[str, str]]:
    """Rows of the summary table (the first table) keyed by reader name: column header -> cell text."""
    lines = _tables()[0]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for ln in lines[2:]:
        cells = dict(zip(header, (c.strip() for c in ln.strip("|").split("|"))))
        rows[cells["reader name"].strip("`")] = cells
    return rows


@pytest.mark.skipif(not DOC.is_file(), reason="docs/ is not part of an installed package, only of the repository")
def test_docs_table_matches_registry():
    rows = _doc_table()
    sections = DOC.read_text().split("\n## ", 1)[1]
    assert set(rows) == set(list_datasets())
    for name, row in rows.items():
        cls = dataset_class(name)
        assert int(re.match(r"\d+", row["classes"]).group()) == len(cls.class_names), name
        assert tuple(s.strip() for s in row["splits"].split(",")) == cls.splits, name
        assert (row["cameras"] != "no") == cls.has_cameras, name
        assert (row["temporal"] != "no") == cls.temporal, name
        assert f"— `{name}`" in sections, f"{name} has no section"


@pytest.mark.skipif(not DOC.is_file(), reason="docs/ is not part of an installed package, only of the repository")
def test_docs_state_files_and_errors_per_reader_and_list_every_sample():
    from largead.data.export import OFFICIAL_SAMPLES

    sections = {sec.split("\n", 1)[0]: sec for sec in DOC.read_text().split("\n## ")[1:]}
    for name in list_datasets():
        if name == "synthetic":  # nothing on disk
            continue
        (title,) = [t for t in sections if t.endswith(f"— `{name}`")]
        text = sections[title]
        assert "- **Files" in text and ("- **Errors**" in text or "- **Files and errors**" in text), name
    samples = next(t for t in _tables() if t[0].startswith("| key"))
    keys = {k.strip("` ") for row in samples[2:] for k in row.strip("|").split("|")[0].split(",")}
    assert keys == set(OFFICIAL_SAMPLES)


def test_an_option_the_reader_does_not_take_is_named_with_a_suggestion(tmp_path):
    from largead.data.registry import reader_options

    assert "cameras" in reader_options("semantickitti") and reader_options("synthetic") is None
    with pytest.raises(ValueError, match=r"dataset 'semantickitti' has no option\(s\) \['camera'\] \('camera': did "
                                         r"you mean 'cameras'\?\); its options: .*cameras"):
        get_dataset("semantickitti", tmp_path, "train", camera=True)
