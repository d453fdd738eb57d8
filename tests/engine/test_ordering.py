"""The schedule's rules as properties: blocks bound what a child misses, outcomes are applied in child
order whatever order they arrive in, and the free mode's limit stays within its bounds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from openended.engine.ordering import Blocks, InOrder, free_limit


@given(n_roots=st.integers(1, 50), staleness=st.integers(2, 300), start=st.integers(0, 10_000))
def test_a_block_misses_fewer_than_staleness_outcomes(n_roots, staleness, start):
    blocks = Blocks(n_roots=n_roots, staleness=staleness)
    start = max(start, n_roots)  # blocks start after the roots
    seen = blocks.applied_before(start)
    assert n_roots <= seen <= start
    for child in range(start, start + blocks.size):
        assert child - seen <= staleness - 1  # the predecessors whose outcomes it cannot see
    assert blocks.applied_before(start + blocks.size) >= seen  # later blocks never see less


@settings(max_examples=200)
@given(data=st.data(), n=st.integers(1, 60))
def test_outcomes_are_applied_once_in_child_order_whatever_their_arrival(data, n):
    arrival = data.draw(st.permutations(range(n)))
    limits = data.draw(st.lists(st.integers(0, n), min_size=len(arrival), max_size=len(arrival)))
    finished_already = data.draw(st.sets(st.sampled_from(range(n)), max_size=n // 3))
    applied: list[int] = []
    order = InOrder(0, applied.extend, done=set(finished_already))
    for agent_id, limit in zip(arrival, limits, strict=True):
        if agent_id not in finished_already:
            order.hold(agent_id, agent_id)
        order.release(limit)
        assert applied == [i for i in range(order.frontier) if i not in finished_already]
        assert order.frontier <= max(limits[: arrival.index(agent_id) + 1])
    order.release_all()
    assert applied == [i for i in range(n) if i not in finished_already]
    assert order.frontier == n


@given(staleness=st.integers(2, 512), archive_size=st.integers(0, 100_000), per_task=st.integers(1, 128),
       cpus=st.integers(0, 64))
def test_free_limit_stays_between_a_task_per_cpu_and_the_staleness(staleness, archive_size, per_task, cpus):
    assert free_limit(staleness, archive_size=archive_size, per_task=per_task, cpus=cpus) == staleness
    limit = free_limit(None, archive_size=archive_size, per_task=per_task, cpus=cpus)
    floor = max(1, cpus) * per_task
    default = max(2, min(256, 2 * floor))  # every CPU a task and the next one waiting, at most 256
    assert limit <= default
    assert limit >= min(default, floor)  # every CPU can stay busy
    assert limit <= max(floor, archive_size)  # no more waiting than members, beyond the floor
