"""Named timing sections for profiling a training step; free unless a :class:`Profiler` is enabled.

    from largead.profiling import Profiler, section

    with section("teacher forward"):      # library code: a shared no-op object unless profiling is on
        ...

    prof = Profiler()
    with prof:                            # enables it (one at a time, for this process)
        for _ in range(n):
            with prof.step():             # the step's wall time, measured around everything it does
                ...
    print(prof.table())

Times are wall-clock (``time.perf_counter``) or, with ``Profiler(clock="cpu")``, the process's CPU time
(``time.process_time``: robust on a shared machine when torch runs one thread, meaningless for GPU work); when
CUDA is initialised, the device is synchronised at each section boundary so GPU work is charged to the section that
queued it. Sections may nest: each row holds its *exclusive*
time (a section's time minus the sections inside it), so the rows never count a second twice, and the ``other`` row
of :meth:`Profiler.rows` (the measured step time minus every section) makes them sum to the step. Sections run
outside :meth:`Profiler.step` (e.g. building) are not recorded. Keep sections coarse: one enter/exit costs about a
microsecond when enabled, and a global lookup when not.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Profiler", "active", "section"]

_ACTIVE: Profiler | None = None


class _Null:
    """The section returned while profiling is off: entering and leaving it does nothing."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


_NULL = _Null()


def _sync() -> None:
    """Wait for queued CUDA work (only when torch is loaded and CUDA initialised; CPU runs pay nothing)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class _Section:
    __slots__ = ("name", "prof", "start", "child")

    def __init__(self, prof: Profiler, name: str):
        self.prof, self.name = prof, name

    def __enter__(self) -> None:
        _sync()
        self.child = 0.0
        self.prof._stack.append(self)
        self.start = self.prof._clock()

    def __exit__(self, *exc: Any) -> None:
        _sync()
        elapsed = self.prof._clock() - self.start
        prof = self.prof
        prof._stack.pop()
        if prof._stack:  # the enclosing section's exclusive time leaves this one out
            prof._stack[-1].child += elapsed
        if prof._in_step:
            prof.totals[self.name] = prof.totals.get(self.name, 0.0) + elapsed - self.child
            if self.name not in prof.order:
                prof.order.append(self.name)


def active() -> Profiler | None:
    """The enabled profiler, if any."""
    return _ACTIVE


def section(name: str) -> _Section | _Null:
    """A context manager charging its wall time to row ``name`` of the enabled profiler (a no-op when none is)."""
    prof = _ACTIVE
    if prof is None:
        return _NULL
    return _Section(prof, name)


class Profiler:
    """Accumulates per-section and per-step wall time while enabled (``with prof:`` or :meth:`enable`).

    ``order`` lists the rows in the order first seen (or as given: ``Profiler(order=[...])`` fixes the table's row
    order and shows rows that never ran as 0). ``clock``: ``"wall"`` (default) or ``"cpu"`` (process CPU time).
    ``steps``/``step_seconds``: steps measured and their total time."""

    def __init__(self, order: list[str] | None = None, clock: str = "wall"):
        if clock not in ("wall", "cpu"):
            raise ValueError(f"Profiler clock must be 'wall' or 'cpu', got {clock!r}")
        self.clock = clock
        self._clock = time.perf_counter if clock == "wall" else time.process_time
        self.order: list[str] = list(order or [])
        self.totals: dict[str, float] = {}
        self.steps = 0
        self.step_seconds = 0.0
        self._stack: list[_Section] = []
        self._in_step = False

    def reset(self) -> None:
        """Forget what was measured (e.g. after a warm-up step); the row order is kept."""
        self.totals, self.steps, self.step_seconds = {}, 0, 0.0

    # -- enabling -----------------------------------------------------------------------------------------------
    def enable(self) -> None:
        global _ACTIVE
        if _ACTIVE is not None and _ACTIVE is not self:
            raise RuntimeError("another Profiler is already enabled in this process")
        _ACTIVE = self

    def disable(self) -> None:
        global _ACTIVE
        if _ACTIVE is self:
            _ACTIVE = None

    def __enter__(self) -> Profiler:
        self.enable()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.disable()

    @contextmanager
    def step(self) -> Iterator[None]:
        """Measure one step: its wall time, and the sections run inside it."""
        if self._in_step:
            raise RuntimeError("Profiler.step() does not nest")
        _sync()
        self._in_step = True
        start = self._clock()
        try:
            yield
        finally:
            _sync()
            self.step_seconds += self._clock() - start
            self.steps += 1
            self._in_step = False

    # -- results ------------------------------------------------------------------------------------------------
    def rows(self) -> list[tuple[str, float, float]]:
        """``[(section, ms per step, % of the step)]`` in row order, then ``other`` (step time minus the sections;
        the rows sum to the step time), then ``step`` (the measured step time, 100 %)."""
        if self.steps == 0:
            raise ValueError("no step was measured")
        step_ms = 1000.0 * self.step_seconds / self.steps
        out = []
        for name in self.order:
            ms = 1000.0 * self.totals.get(name, 0.0) / self.steps
            out.append((name, ms, 100.0 * ms / step_ms if step_ms > 0 else 0.0))
        other = step_ms - sum(ms for _, ms, _ in out)
        out.append(("other", other, 100.0 * other / step_ms if step_ms > 0 else 0.0))
        out.append(("step", step_ms, 100.0))
        return out

    def table(self, title: str | None = None) -> str:
        """The rows as an aligned Markdown table (``| section | ms/step | % of step |``)."""
        rows = self.rows()
        width = max(len("section"), *(len(name) for name, _, _ in rows))
        lines = [title] if title else []
        lines.append(f"| {'section':<{width}} | {'ms/step':>9} | {'% of step':>9} |")
        lines.append(f"|{'-' * (width + 2)}|{'-' * 10}:|{'-' * 10}:|")
        for name, ms, pct in rows:
            lines.append(f"| {name:<{width}} | {ms:>9.1f} | {pct:>8.1f}% |")
        return "\n".join(lines)
