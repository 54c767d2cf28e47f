"""Latency budgets: "6ms", "0.5x" / "50%" of the unpruned model's latency, or a float in ms."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import BadInputError, InfeasibleBudgetError

_SPEC = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*(ms|x|%)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Budget:
    """A budget as the user wrote it: `value` in ms, or a fraction of the unpruned latency."""

    value: float
    relative: bool

    @property
    def label(self) -> str:
        return f"{self.value:g}x" if self.relative else f"{self.value:g}ms"

    def ms(self, full_ms: float) -> float:
        return self.value * full_ms if self.relative else self.value


def parse_budget(spec: str | float | Budget) -> Budget:
    """'6ms' / '6' -> 6 ms; '0.5x' / '50%' -> half the unpruned latency; a number is ms."""
    if isinstance(spec, Budget):
        return spec
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        value, unit = float(spec), "ms"
    else:
        m = _SPEC.match(str(spec))
        if not m:
            raise BadInputError(f"cannot read latency budget {spec!r}; write e.g. 6ms, 0.5x or 50%")
        value, unit = float(m.group(1)), (m.group(2) or "ms").lower()
    if not math.isfinite(value) or value <= 0:
        raise BadInputError(f"latency budget {spec!r} must be a positive number")
    if unit == "%":
        return Budget(value / 100, True)
    if unit == "x":
        return Budget(value, True)
    return Budget(value, False)


def check_feasible(budgets_ms: dict[str, float], floor_ms: float, where: str, full_ms: float | None = None) -> None:
    """Refuse budgets under the fastest reachable model, naming that floor. A table that predicts
    the floor no faster than the unpruned model (`full_ms`) contradicts itself, and the refusal
    says so: a budget is not what is wrong there."""
    low = {k: v for k, v in budgets_ms.items() if v < floor_ms}
    if low:
        said = ", ".join(f"{k} = {v:.4g} ms" for k, v in low.items())
        problem = None if full_ms is None else contradiction(floor_ms, full_ms)
        raise InfeasibleBudgetError(
            f"latency budget {said} is below the smallest reachable latency {floor_ms:.4g} ms on {where} "
            "(every prunable group at its minimum width); raise the budget, lower the channel_step, "
            f"or choose a faster target{f'; but {problem}' if problem else ''}")


def contradiction(floor_ms: float, full_ms: float) -> str | None:
    """What is wrong with a table that predicts a model's smallest reachable variant no faster
    than the model itself, else None: said when a table is profiled and when a build meets one."""
    if floor_ms < full_ms:
        return None
    return (f"the table predicts this model's smallest reachable variant ({floor_ms:.4g} ms) no faster than the "
            f"unpruned model ({full_ms:.4g} ms): its measurements contradict each other (was the machine busy?), "
            "or this target runs the model at a fixed cost that pruning cannot lower. Profile this model again "
            "into a new table (--out) on an idle machine before building with it")


def schedule(full_ms: float, goal_ms: float, steps: int) -> list[float]:
    """Iterative pruning's budgets: `steps` of them, geometric from `full_ms` down to `goal_ms`
    (each step removes the same share of latency), ending at `goal_ms` itself."""
    return [full_ms * (goal_ms / full_ms) ** (k / steps) for k in range(1, steps)] + [goal_ms]
