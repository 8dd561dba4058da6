from __future__ import annotations

import numpy as np
import pytest
from fixtures import make_semantickitti_fixture

from largead.data import get_dataset
from largead.data.frame import Frame
from largead.data.registry import LidarDataset
from largead.data.splits import label_fraction_indices, skip_ratio


class FakeScenes(LidarDataset):
    """In-memory dataset: ``counts[s]`` frames in sequence ``s``."""

    name = "fake"
    label_fraction_unit = "sequence"

    def __init__(self, counts):
        self.index = [(f"scene-{s:04d}", j) for s, c in enumerate(counts) for j in range(c)]

    def __len__(self):
        return len(self.index)

    def sequence_of(self, i):
        return self.index[i]

    def frame(self, i):
        return Frame(points=np.zeros((1, 4), np.float32), sequence=self.index[i][0], index=self.index[i][1])


def test_nuscenes_rule_one_percent_keeps_seven_of_700_scenes():
    ds = FakeScenes([2] * 700)
    idx = label_fraction_indices(ds, 1)
    scenes = sorted({ds.sequence_of(i)[0] for i in idx})
    # SLidR: counter from 1, keep counter % 100 == 0 -> the 100th, 200th, ... scene (0-based 99, 199, ...)
    assert scenes == [f"scene-{s:04d}" for s in (99, 199, 299, 399, 499, 599, 699)]
    assert len(idx) == 14 and np.all(np.diff(idx) > 0)
    assert len({ds.sequence_of(i)[0] for i in label_fraction_indices(ds, 10)}) == 70
    assert len({ds.sequence_of(i)[0] for i in label_fraction_indices(ds, 25)}) == 175
    assert len(label_fraction_indices(ds, 100)) == 1400


def test_sequence_rule_keeps_whole_sequences_of_uneven_length():
    ds = FakeScenes([3, 1, 4, 1, 5])
    idx = label_fraction_indices(ds, 50)  # k = 2: 2nd and 4th scenes
    assert [ds.sequence_of(i) for i in idx] == [("scene-0001", 0), ("scene-0003", 0)]
    with pytest.raises(ValueError, match="fake: 1% of 5 sequences .every 100-th. keeps none"):
        label_fraction_indices(ds, 1)


def test_frame_rule_every_kth_from_first():
    ds = FakeScenes([400, 600])
    np.testing.assert_array_equal(label_fraction_indices(ds, 10, unit="frame"), np.arange(0, 1000, 10))
    np.testing.assert_array_equal(label_fraction_indices(ds, 1, unit="frame"), np.arange(0, 1000, 100))


def test_skip_ratio_validation():
    assert [skip_ratio(p) for p in (1, 5, 10, 20, 25, 50, 100)] == [100, 20, 10, 5, 4, 2, 1]
    for bad in (0, 3, 33, 150, -1):
        with pytest.raises(ValueError, match="label fraction"):
            skip_ratio(bad)
    with pytest.raises(ValueError, match="unknown label-fraction unit"):
        label_fraction_indices(FakeScenes([1]), 100, unit="scene")


def test_semantickitti_reader_uses_frame_rule(tmp_path):
    make_semantickitti_fixture(tmp_path, sequences=("00", "01"), frames_per_sequence=5, num_points=10)
    with pytest.warns(UserWarning):
        ds = get_dataset("semantickitti", tmp_path, "train")
    idx = label_fraction_indices(ds, 20)  # k = 5 over the sorted files 00/000000..00/000004, 01/000000..
    assert [ds.frame(i).token for i in idx] == ["00/000000", "01/000000"]
    assert label_fraction_indices(ds, 1).tolist() == [0]  # the frame rule always keeps the first scan


def test_empty_dataset_raises():
    with pytest.raises(ValueError, match="fake: 10% of 0 frames keeps none"):
        label_fraction_indices(FakeScenes([]), 10, unit="frame")
