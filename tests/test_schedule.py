"""The MTL schedule: one task order for all ranks, world-size-free data order, O(1) resume."""

from __future__ import annotations

import time

import numpy as np
import pytest

from road_ds.schedule import BatchSplit, DatasetCursor, MTLSampler, TaskSchedule

SIZES = {"squad": 900, "mnli": 400, "qqp": 100}


def test_probabilities_per_policy():
    assert TaskSchedule(SIZES, "uniform").probabilities() == pytest.approx({n: 1 / 3 for n in SIZES})
    assert TaskSchedule(SIZES, "proportional").probabilities() == pytest.approx({"squad": 9 / 14, "mnli": 4 / 14, "qqp": 1 / 14})
    # size^(1/2): 30, 20, 10
    assert TaskSchedule(SIZES, "temperature", temperature=2.0).probabilities() == pytest.approx({"squad": 0.5, "mnli": 1 / 3, "qqp": 1 / 6})


def test_bad_schedules_refused():
    with pytest.raises(ValueError, match="unknown sampling policy"):
        TaskSchedule(SIZES, "roundrobin")
    with pytest.raises(ValueError, match="without rows"):
        TaskSchedule({"a": 0, "b": 3})
    with pytest.raises(ValueError, match="temperature"):
        TaskSchedule(SIZES, "temperature", temperature=0)


def test_dataset_for_is_pure_and_order_free():
    a = TaskSchedule(SIZES, seed=7)
    b = TaskSchedule(dict(reversed(list(SIZES.items()))), seed=7)  # another dict order
    forward = [(s, m, a.dataset_for(s, m)) for s in range(50) for m in range(4)]
    backward = [(s, m, b.dataset_for(s, m)) for s in reversed(range(50)) for m in reversed(range(4))]
    assert sorted(forward) == sorted(backward)
    assert a.dataset_for(10**9, 3) == TaskSchedule(SIZES, seed=7).dataset_for(10**9, 3)
    other = TaskSchedule(SIZES, seed=8)
    assert [x[2] for x in forward] != [other.dataset_for(s, m) for s, m, _ in forward]


def test_cursor_union_over_ranks_is_single_rank_take():
    for world in (2, 4, 8):
        one, many = DatasetCursor(37, 3, "d"), [DatasetCursor(37, 3, "d") for _ in range(world)]
        for _ in range(20):  # 20 * 16 rows: several epoch boundaries of a 37-row set
            whole = one.take(16, 0, 1)
            parts = [c.take(16, r, world) for r, c in enumerate(many)]
            assert np.array_equal(np.concatenate(parts), whole)
        assert {c.consumed for c in many} == {one.consumed}


def test_cursor_every_row_once_per_epoch_and_epochs_differ():
    c = DatasetCursor(50, 0, "d")
    rows = np.concatenate([c.take(10, 0, 1) for _ in range(15)])  # 150 = 3 epochs, batch crosses none
    epochs = rows.reshape(3, 50)
    for e in epochs:
        assert sorted(e.tolist()) == list(range(50))
    assert not np.array_equal(epochs[0], epochs[1])
    assert c.epoch == 3
    # a batch that crosses a boundary: tail of one epoch, head of the next
    c = DatasetCursor(50, 0, "d", consumed=45)
    batch = c.take(10, 0, 1)
    assert np.array_equal(batch, np.concatenate([c.permutation(0)[45:], c.permutation(1)[:5]]))
    # a batch larger than the dataset spans several epochs
    assert len(DatasetCursor(3, 0, "tiny").take(8, 0, 1)) == 8


def test_cursor_resume_is_exact_and_o1():
    run = DatasetCursor(101, 5, "d")
    first = [run.take(12, 1, 3) for _ in range(7)]
    state = run.state_dict()
    rest = [run.take(12, 1, 3) for _ in range(9)]
    resumed = DatasetCursor(101, 5, "d")
    resumed.load_state_dict(state)
    assert all(np.array_equal(x, y) for x, y in zip(rest, [resumed.take(12, 1, 3) for _ in range(9)]))
    assert first  # the part before the checkpoint is not replayed
    t = time.perf_counter()
    far = DatasetCursor(1000, 5, "d", consumed=10**9)
    far.take(64, 0, 2)
    assert time.perf_counter() - t < 0.5
    assert far.epoch == 10**6


def test_cursor_order_depends_on_name_and_seed():
    base = DatasetCursor(100, 0, "a").take(100, 0, 1)
    assert not np.array_equal(base, DatasetCursor(100, 0, "b").take(100, 0, 1))
    assert not np.array_equal(base, DatasetCursor(100, 1, "a").take(100, 0, 1))
    assert np.array_equal(base, DatasetCursor(100, 0, "a").take(100, 0, 1))


def test_cursor_refuses_uneven_batches():
    with pytest.raises(ValueError, match="evenly"):
        DatasetCursor(10, 0, "d").take(10, 0, 3)
    with pytest.raises(ValueError, match="outside"):
        DatasetCursor(10, 0, "d").take(10, 2, 2)


def test_sampler_ranks_agree_on_tasks_and_split_rows():
    # sizes are multiples of the global micro-batch (8): a batch that straddles an epoch boundary
    # may legitimately give one rank the tail of an epoch and another the same row at the next head
    sizes = {"squad": 904, "mnli": 400, "qqp": 96}
    ranks = [MTLSampler(sizes, micro_batch_size=4, passes=4, world=2, rank=r, seed=1) for r in range(2)]
    for _ in range(200):
        a, b = (s.next_step() for s in ranks)
        assert [n for n, _ in a] == [n for n, _ in b]
        for (_, ra), (_, rb) in zip(a, b):
            assert len(ra) == len(rb) == 4 and not set(ra.tolist()) & set(rb.tolist())
    assert ranks[0].state_dict() == ranks[1].state_dict()


def test_sampler_world_size_change_keeps_data():
    """Same global batch (micro x world), other world size: the same rows in the same steps."""
    one = MTLSampler(SIZES, micro_batch_size=8, passes=2, world=1, rank=0, seed=3)
    four = [MTLSampler(SIZES, micro_batch_size=2, passes=2, world=4, rank=r, seed=3) for r in range(4)]
    for _ in range(50):
        whole = one.next_step()
        parts = [s.next_step() for s in four]
        for m, (name, rows) in enumerate(whole):
            assert all(p[m][0] == name for p in parts)
            assert np.array_equal(np.concatenate([p[m][1] for p in parts]), rows)


def test_batch_split_keeps_the_rows_in_the_fewest_equal_chunks_under_the_cap():
    assert (BatchSplit.fit(16, 2, 8).per_rank, BatchSplit.fit(16, 2, 8).chunks) == (8, 1)  # a fresh run: the recipe's
    assert (BatchSplit.fit(16, 1, 8).chunk, BatchSplit.fit(16, 1, 8).chunks) == (8, 2)  # half the ranks: two chunks
    assert (BatchSplit.fit(16, 4, 8).per_rank, BatchSplit.fit(16, 4, 8).chunks) == (4, 1)  # more ranks: fewer rows each
    assert (BatchSplit.fit(24, 1, 5).chunk, BatchSplit.fit(24, 1, 5).chunks) == (4, 6)  # 5 does not divide 24: 6 of 4
    assert BatchSplit.fit(7, 1, 2).chunks == 7  # a prime: single rows
    with pytest.raises(ValueError, match="16 rows per micro-batch do not split evenly over 3 ranks"):
        BatchSplit.fit(16, 3, 8)


def test_sampler_resume_matches_uninterrupted_run():
    run = MTLSampler(SIZES, micro_batch_size=3, passes=4, world=2, rank=1, policy="temperature", seed=9)
    for _ in range(30):
        run.next_step()
    state = run.state_dict()
    expected = [run.next_step() for _ in range(30)]
    resumed = MTLSampler(SIZES, micro_batch_size=3, passes=4, world=2, rank=1, policy="temperature", seed=9)
    resumed.load_state_dict(state)
    got = [resumed.next_step() for _ in range(30)]
    for e, g in zip(expected, got):
        assert [n for n, _ in e] == [n for n, _ in g]
        assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(e, g))
    with pytest.raises(ValueError, match="nli"):
        resumed.load_state_dict({"step": 0, "consumed": {"snli": 3}})


@pytest.mark.parametrize("policy", ["uniform", "proportional", "temperature"])
def test_sampler_frequencies_match_probabilities(policy):
    s = MTLSampler(SIZES, micro_batch_size=1, passes=4, world=1, rank=0, policy=policy, seed=0)
    counts = dict.fromkeys(SIZES, 0)
    steps = 5000
    for step in range(steps):
        for name in s.peek(step):
            counts[name] += 1
    n = steps * 4
    for name, p in s.schedule.probabilities().items():
        sd = (p * (1 - p) / n) ** 0.5
        assert abs(counts[name] / n - p) < 5 * sd, (name, counts[name] / n, p)
