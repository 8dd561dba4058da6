"""largead.profiling: named sections, exclusive times, the ``other`` row, and nothing recorded while disabled.

The oracle is ``time.sleep``: a known sleep inside a section must be charged to that row (at least the slept time,
and not much more), and the rows (sections + ``other``) must add up to the measured step time exactly."""

from __future__ import annotations

import time

import pytest

from largead import profiling
from largead.profiling import Profiler, section


def _rows(prof: Profiler) -> dict[str, tuple[float, float]]:
    return {name: (ms, pct) for name, ms, pct in prof.rows()}


def test_a_known_sleep_is_charged_to_its_row_and_rows_sum_to_the_step():
    prof = Profiler()
    with prof:
        for _ in range(2):
            with prof.step():
                with section("a"):
                    time.sleep(0.05)
                with section("b"):
                    time.sleep(0.02)
                time.sleep(0.01)  # in no section: "other"
    rows = _rows(prof)
    assert list(rows) == ["a", "b", "other", "step"]
    assert prof.steps == 2
    assert 50.0 <= rows["a"][0] < 50.0 + 25.0
    assert 20.0 <= rows["b"][0] < 20.0 + 25.0
    assert rows["other"][0] >= 10.0
    step = rows["step"][0]
    assert step >= 80.0 and rows["step"][1] == 100.0
    assert sum(ms for name, (ms, _) in rows.items() if name != "step") == pytest.approx(step, rel=1e-9)
    assert sum(pct for name, (_, pct) in rows.items() if name != "step") == pytest.approx(100.0, rel=1e-9)
    assert rows["a"][1] == pytest.approx(100.0 * rows["a"][0] / step)
    table = prof.table()
    assert table.splitlines()[0].split("|")[1:4] == [" section ", "   ms/step ", " % of step "]
    assert all(f"| {name}" in table for name in rows)


def test_nested_sections_hold_exclusive_time():
    prof = Profiler()
    with prof, prof.step():
        with section("outer"):
            time.sleep(0.02)
            with section("inner"):
                time.sleep(0.04)
        with section("inner"):  # the same row again: accumulated
            time.sleep(0.01)
    rows = _rows(prof)
    assert 20.0 <= rows["outer"][0] < 20.0 + 20.0  # the inner 40 ms are not counted twice
    assert 50.0 <= rows["inner"][0] < 50.0 + 20.0
    assert rows["outer"][0] + rows["inner"][0] + rows["other"][0] == pytest.approx(rows["step"][0], rel=1e-9)


def test_disabled_sections_record_nothing():
    assert profiling.active() is None
    assert section("x") is section("y")  # the shared no-op object: nothing allocated, nothing timed
    prof = Profiler()
    with section("x"):  # not enabled: not recorded
        time.sleep(0.001)
    with prof:
        with section("x"):  # enabled but outside a step (e.g. building): not recorded
            time.sleep(0.001)
        with prof.step():
            pass
    assert profiling.active() is None and prof.totals == {} and prof.order == []
    assert [name for name, _, _ in prof.rows()] == ["other", "step"]


def test_order_reset_and_cpu_clock():
    prof = Profiler(order=["never", "a"], clock="cpu")
    with prof:
        with prof.step(), section("a"):
            sum(range(10**5))
        prof.reset()  # e.g. after a warm-up step
        with prof.step(), section("a"):
            time.sleep(0.05)  # sleeping costs (almost) no CPU time
    rows = _rows(prof)
    assert list(rows) == ["never", "a", "other", "step"] and prof.steps == 1
    assert rows["never"][0] == 0.0 and rows["a"][0] < 25.0


def test_errors():
    with pytest.raises(ValueError, match="clock"):
        Profiler(clock="gpu")
    with pytest.raises(ValueError, match="no step"):
        Profiler().rows()
    a, b = Profiler(), Profiler()
    with a, pytest.raises(RuntimeError, match="already enabled"):
        b.enable()
    with a, a.step(), pytest.raises(RuntimeError, match="nest"):
        with a.step():
            pass
