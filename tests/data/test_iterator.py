"""``data.batches``: seeded, resumable, each example once per epoch."""

import json

import numpy as np
import pytest

from mmfuse import data

OPTIONS = {"sizes": (103, 10, 10), "seed": 5}
N = 103


def _rows(batch) -> list[bytes]:
    return [row.tobytes() for row in batch["x1"]]


@pytest.fixture(scope="module")
def stored(data_dir):
    return data.load("synthetic/mix", "train", data_dir=data_dir, **OPTIONS)


def _batches(data_dir, **kwargs):
    return data.batches("synthetic/mix", "train", data_dir=data_dir, **OPTIONS, **kwargs)


def test_batches_are_per_modality_dicts(data_dir):
    batch = next(_batches(data_dir, batch_size=16))
    assert list(batch) == ["x1", "x2", "label"]
    assert batch["x1"].shape == (16, 16) and batch["x1"].dtype == np.float32
    assert batch["label"].shape == (16,) and batch["label"].dtype == np.int64


def test_each_epoch_visits_every_example_once_in_a_new_order(data_dir, stored):
    it = _batches(data_dir, batch_size=16, num_epochs=3, shuffle_seed=1)
    batches = list(it)
    per_epoch = -(-N // 16)
    assert len(batches) == 3 * per_epoch
    assert [len(b["label"]) for b in batches[:per_epoch]] == [16] * (per_epoch - 1) + [N % 16]
    everything = sorted(row.tobytes() for row in stored["x1"])
    orders = []
    for epoch in range(3):
        rows = [r for b in batches[epoch * per_epoch : (epoch + 1) * per_epoch] for r in _rows(b)]
        assert sorted(rows) == everything
        orders.append(rows)
    assert orders[0] != orders[1] != orders[2]
    # features and labels stay paired
    lookup = {
        row.tobytes(): label for row, label in zip(stored["x1"], stored["label"], strict=True)
    }
    for b in batches:
        assert [lookup[r] for r in _rows(b)] == b["label"].tolist()


def test_resuming_from_a_saved_state_gives_exactly_the_same_batches(data_dir):
    it = _batches(data_dir, batch_size=16, num_epochs=None, shuffle_seed=3)
    for _ in range(9):  # crosses the end of the first epoch (7 batches)
        next(it)
    state = json.loads(json.dumps(it.get_state()))  # as a checkpoint would store it
    expected = [next(it) for _ in range(10)]
    resumed = _batches(data_dir, batch_size=16, num_epochs=None, shuffle_seed=3)
    resumed.set_state(state)
    for want, got in zip(expected, [next(resumed) for _ in range(10)], strict=True):
        for key in want:
            np.testing.assert_array_equal(want[key], got[key])


def test_shuffle_seed_sets_the_order(data_dir):
    first = [_rows(b) for b in _batches(data_dir, batch_size=32, shuffle_seed=4)]
    again = [_rows(b) for b in _batches(data_dir, batch_size=32, shuffle_seed=4)]
    other = [_rows(b) for b in _batches(data_dir, batch_size=32, shuffle_seed=5)]
    unshuffled = [_rows(b) for b in _batches(data_dir, batch_size=32, shuffle=False)]
    assert first == again and first != other
    assert [r for b in unshuffled for r in b] == [
        r for r in _rows(data.load("synthetic/mix", "train", data_dir=data_dir, **OPTIONS))
    ]


def test_shards_partition_the_split_and_drop_remainder(data_dir, stored):
    rows = []
    for index in range(3):
        batches = list(
            _batches(data_dir, batch_size=8, shard_index=index, shard_count=3, drop_remainder=True)
        )
        assert all(len(b["label"]) == 8 for b in batches)
        assert len(batches) == len(range(index, N, 3)) // 8
        rows += [
            r
            for b in _batches(data_dir, batch_size=8, shard_index=index, shard_count=3)
            for r in _rows(b)
        ]
    assert sorted(rows) == sorted(row.tobytes() for row in stored["x1"])


def test_bad_iterator_arguments_raise(data_dir):
    with pytest.raises(ValueError, match="batch_size"):
        _batches(data_dir, batch_size=0)
    with pytest.raises(ValueError, match="shard_index"):
        _batches(data_dir, batch_size=4, shard_index=2, shard_count=2)
    with pytest.raises(ValueError, match="fewer than one batch"):
        _batches(data_dir, batch_size=200, drop_remainder=True)
    with pytest.raises(ValueError, match="unknown split"):
        data.batches("synthetic/mix", "eval", batch_size=4)
    with pytest.raises(ValueError, match="unknown split None"):
        data.batches("synthetic/mix", None, batch_size=4)
    for seed in ("a", -1, 2**32):
        with pytest.raises(ValueError, match=r"shuffle_seed must be an integer in \[0, 2\*\*32\)"):
            _batches(data_dir, batch_size=4, shuffle_seed=seed)
    with pytest.raises(ValueError, match=r"shard_count must be a positive integer, got 2\.0"):
        _batches(data_dir, batch_size=4, shard_count=2.0)
    with pytest.raises(
        ValueError, match=r"num_epochs must be a positive integer or None, got 1\.5"
    ):
        _batches(data_dir, batch_size=4, num_epochs=1.5)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got True"):
        _batches(data_dir, batch_size=True)


def test_numpy_integers_are_accepted_as_sizes_and_counts(data_dir):
    batches = list(
        _batches(
            data_dir,
            batch_size=np.int64(8),
            shard_index=np.int32(1),
            shard_count=np.int64(3),
            num_epochs=np.int64(1),
        )
    )
    assert [len(b["label"]) for b in batches] == [8, 8, 8, 8, 2]  # 34 of the 103 examples
