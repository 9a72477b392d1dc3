"""The circuit breaker: a small state machine on an injectable clock.

Plain synchronous code, no asyncio: the middleware asks for a permit before a
call and reports the call's outcome with that permit. States::

    closed --(failures cross a threshold)--> open --(cool-down over)--> half-open
    half-open --(a probe succeeds)--> closed
    half-open --(a probe fails)--> open

* **closed**: every call goes through. The breaker remembers the outcomes of
  the last ``window`` calls and counts consecutive failures. It opens when
  ``failure_threshold`` failures come in a row, or when at least ``min_calls``
  calls are remembered and the share of failures among them reaches
  ``failure_rate`` (either rule is off when set to 0).
* **open**: every call fails fast. The first permit asked for once
  ``cooldown`` seconds have passed (or the first look at :attr:`state`) turns
  the breaker half-open.
* **half-open**: up to ``probes`` calls at a time go through. The first probe
  that succeeds closes the breaker (with a clean slate); the first that fails
  opens it again for another cool-down. Neutral outcomes give the probe slot
  back.

Every transition starts a new *generation*; a permit is the generation it was
given in, and an outcome reported with a permit of an older generation is
ignored, so calls that were in flight when the state changed cannot count
twice or close a breaker that opened since.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

import attrs

__all__ = ["CLOSED", "OPEN", "HALF_OPEN", "STATES", "BreakerSettings", "CircuitBreaker"]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"
#: The states, in order of severity (also the value of the metric gauge).
STATES = (CLOSED, HALF_OPEN, OPEN)

Clock = Callable[[], float]
OnChange = Callable[["CircuitBreaker", str, str], None]


@attrs.frozen
class BreakerSettings:
    """When a breaker opens and how it recovers (see the module docstring)."""

    failure_threshold: int = 5
    failure_rate: float = 0.5
    window: int = 20
    min_calls: int = 10
    cooldown: float = 5.0
    probes: int = 1


class CircuitBreaker:
    """One breaker, for one target. ``on_change(breaker, old, new)`` is called
    once per transition."""

    __slots__ = (
        "_clock",
        "_consecutive",
        "_failures",
        "_generation",
        "_on_change",
        "_opened_at",
        "_outcomes",
        "_probes",
        "_state",
        "name",
        "settings",
    )

    def __init__(
        self,
        name: str,
        settings: BreakerSettings,
        *,
        clock: Clock = time.monotonic,
        on_change: OnChange | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._clock = clock
        self._on_change = on_change
        self._state = CLOSED
        self._generation = 0
        self._outcomes: collections.deque[bool] = collections.deque(maxlen=settings.window)
        self._failures = 0  # failures among _outcomes
        self._consecutive = 0
        self._opened_at = 0.0
        self._probes = 0  # probes in flight while half-open

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name} {self._state}>"

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open`` (an open breaker whose
        cool-down is over turns half-open when looked at)."""
        if self._state == OPEN and self._clock() >= self._opened_at + self.settings.cooldown:
            self._move(HALF_OPEN)
        return self._state

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a probe through (0 otherwise)."""
        if self._state != OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.settings.cooldown - self._clock())

    def try_acquire(self) -> int | None:
        """A permit for one call, or ``None`` when the call must fail fast."""
        if self._state == CLOSED:
            return self._generation
        if self._state == OPEN:
            if self._clock() < self._opened_at + self.settings.cooldown:
                return None
            self._move(HALF_OPEN)
        if self._probes >= self.settings.probes:
            return None
        self._probes += 1
        return self._generation

    def on_success(self, permit: int) -> None:
        """The call answered: the target is healthy."""
        if permit != self._generation:
            return
        if self._state == HALF_OPEN:
            self._move(CLOSED)
            return
        self._consecutive = 0
        outcomes = self._outcomes  # _remember(False), inlined: this is the common path
        if len(outcomes) == outcomes.maxlen and outcomes[0]:
            self._failures -= 1
        outcomes.append(False)

    def on_failure(self, permit: int) -> None:
        """The call failed in a way that is the target's fault."""
        if permit != self._generation:
            return
        if self._state == HALF_OPEN:
            self._move(OPEN)
            return
        self._consecutive += 1
        self._remember(True)
        settings = self.settings
        if (settings.failure_threshold and self._consecutive >= settings.failure_threshold) or (
            settings.failure_rate
            and len(self._outcomes) >= settings.min_calls
            and self._failures / len(self._outcomes) >= settings.failure_rate
        ):
            self._move(OPEN)

    def on_neutral(self, permit: int) -> None:
        """The call ended in a way that says nothing about the target."""
        if permit == self._generation and self._state == HALF_OPEN:
            self._probes -= 1

    def _remember(self, failed: bool) -> None:
        outcomes = self._outcomes
        if len(outcomes) == outcomes.maxlen and outcomes[0]:
            self._failures -= 1
        outcomes.append(failed)
        if failed:
            self._failures += 1

    def _move(self, new: str) -> None:
        old, self._state = self._state, new
        self._generation += 1
        if new == CLOSED:
            self._outcomes.clear()
            self._failures = self._consecutive = 0
        elif new == OPEN:
            self._opened_at = self._clock()
        else:
            self._probes = 0
        if self._on_change is not None:
            self._on_change(self, old, new)
