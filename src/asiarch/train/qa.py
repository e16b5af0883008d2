"""Training QA: ASI-Arch's two sanity rules on a running candidate, against its anchor seed.

- **Too slow.** A design whose time per token is far above its seed's wastes the slot it
  holds: past ``slow_factor`` times the seed's (over two evaluation windows in a row, so
  one hiccup of a busy machine stops nothing) the trial is stopped with that reason.
- **Too good.** A loss more than ``leak_fraction`` below the seed's at the same
  evaluation is what a design that sees the future looks like. The result is flagged and,
  before it counts, its evaluation (the parent's, from the checkpoint in a fresh sandbox:
  ``asiarch.train.sandboxed``) is audited: the tokens after a secret position replaced,
  in another fresh sandbox, must change nothing before it.

Pace is tokens per CPU second where both sides have it (CPU scales): the seed's from its
runs' ``cpu_tokens_per_second`` (its training process's CPU time, evaluations left out), the
candidate's from the kernel's count of the training sandbox's CPU time between two reports,
read by the parent as each report arrives (``asiarch.sandbox.cpu_seconds``; the worker's own
timing could be forged; that process trains only, the parent evaluates elsewhere). Wall-clock pace
grows with whatever else shares the cores: on 2 busy cores it stopped a top-5 design at
3.8x the seed's wall time, while CPU time stays with the design
(``benchmarks/bench_qa_pace.py``). CPU time does not count waiting: a design that sleeps or
blocks is not slow by this measure; the sandbox's wall-clock limit and the device-hour
budget bound it. Otherwise (GPU scales, where CPU time does not measure the
work, or a cached seed without CPU pace) both sides use wall-clock tokens per second with the
evaluations included (``wall_tokens_per_second``). A design identical to the seed reads ~1.1x
slower on the wall clock (sandbox and checkpoint traffic, ``benchmarks/bench_sandbox.py``),
well inside 3x.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class TrainingQA:
    """The ``explore.qa_*`` settings (defaults in ``ExploreSettings``): None switches a rule off."""

    slow_factor: float | None
    leak_fraction: float | None

    def __post_init__(self) -> None:
        if self.slow_factor is not None and self.slow_factor <= 1:
            raise ValueError(f"explore.qa_slow_factor must be above 1 or null, got {self.slow_factor}")
        if self.leak_fraction is not None and not 0 < self.leak_fraction < 1:
            raise ValueError(f"explore.qa_leak_fraction must be in (0, 1) or null, got {self.leak_fraction}")


class QAMonitor:
    """Watches one trial's reports from the parent's side of the sandbox.

    ``reference()`` returns the anchor seed's ``{"seed", "loss_curve", "wall_tokens_per_second",
    "cpu_tokens_per_second"}`` or None while the seed is still training (the rules wait for it;
    they never guess).
    """

    def __init__(self, settings: TrainingQA, reference: Callable[[], dict[str, Any] | None], tokens_per_report: int,
                 clock: Callable[[], float] = time.monotonic):
        self.settings, self.reference, self.tokens_per_report, self.clock = settings, reference, tokens_per_report, clock
        self.last: tuple[float, float | None] | None = None  # (wall clock, CPU seconds) at the last report
        self.slow_windows = 0
        self.notes: list[str] = []  # flags raised and cleared, for the candidate's record

    def too_slow(self, cpu_clock: Callable[[], float | None] | None = None) -> str | None:
        """Called at each report; ``cpu_clock`` gives the trial's CPU seconds so far (None: unknown), read
        only while the rule is on. The reason to stop this trial, or None."""
        factor = self.settings.slow_factor
        if factor is None:
            return None
        now, last = (self.clock(), cpu_clock() if cpu_clock is not None else None), self.last
        self.last = now
        ref = self.reference()
        if last is None or not ref:
            return None
        if ref.get("cpu_tokens_per_second") and now[1] is not None and last[1] is not None:
            measure, pace, spent = "CPU", ref["cpu_tokens_per_second"], now[1] - last[1]
        elif ref.get("wall_tokens_per_second"):
            measure, pace, spent = "wall-clock", ref["wall_tokens_per_second"], now[0] - last[0]
        else:
            return None
        rate = self.tokens_per_report / max(spent, 1e-9)
        self.slow_windows = self.slow_windows + 1 if rate * factor < pace else 0
        if self.slow_windows < 2:
            return None
        return (f"training QA: {rate:,.0f} tokens per {measure} second over the last evaluation window, more than "
                f"{factor:g}x slower than the seed {ref.get('seed', '?')} ({pace:,.0f}) for two windows in a row")

    def leak_suspected(self, report_index: int, eval_loss: float | None) -> str | None:
        """The flag's wording when ``eval_loss`` at the ``report_index``-th evaluation (from 0) is more than
        ``leak_fraction`` below the seed's at the same evaluation, else None."""
        fraction = self.settings.leak_fraction
        ref = self.reference() if fraction is not None else None
        curve = (ref or {}).get("loss_curve") or []
        if eval_loss is None or report_index >= len(curve):
            return None
        seed_loss = float(curve[report_index])
        if eval_loss >= (1 - fraction) * seed_loss:
            return None
        return (f"suspected leakage: eval loss {eval_loss:.4f} at evaluation {report_index + 1} is "
                f"{100 * (1 - eval_loss / seed_loss):.1f}% below the seed {ref.get('seed', '?')}'s {seed_loss:.4f} "
                f"(flag at {100 * fraction:g}%)")
