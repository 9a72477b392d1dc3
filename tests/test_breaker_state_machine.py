"""The circuit breaker against a simple model, driven by hypothesis on a fake
clock: calls start and end in any order, with any outcome, while time passes."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from cbs.breaker.circuit import CLOSED, HALF_OPEN, OPEN, BreakerSettings, CircuitBreaker

EXAMPLES = 250


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Model:
    """What the breaker should do, written plainly: the outcomes since the
    breaker last closed are kept in a list and every rule recomputed."""

    def __init__(self, s: BreakerSettings, clock: FakeClock) -> None:
        self.s = s
        self.clock = clock
        self.state = CLOSED
        self.generation = 0
        self.history: list[bool] = []  # True: failure; since the last close
        self.opened_at = 0.0
        self.probes = 0
        self.transitions: list[tuple[str, str]] = []

    def move(self, new: str) -> None:
        self.transitions.append((self.state, new))
        self.state = new
        self.generation += 1
        if new == CLOSED:
            self.history = []
        elif new == OPEN:
            self.opened_at = self.clock()
        else:
            self.probes = 0

    def cooled_down(self) -> bool:
        return self.clock() - self.opened_at >= self.s.cooldown

    def look(self) -> str:
        if self.state == OPEN and self.cooled_down():
            self.move(HALF_OPEN)
        return self.state

    def acquire(self) -> int | None:
        if self.look() == OPEN:
            return None
        if self.state == HALF_OPEN:
            if self.probes == self.s.probes:
                return None
            self.probes += 1
        return self.generation

    def should_open(self) -> bool:
        trailing = 0
        for failed in reversed(self.history):
            if not failed:
                break
            trailing += 1
        if self.s.failure_threshold and trailing >= self.s.failure_threshold:
            return True
        recent = self.history[-self.s.window :]
        return bool(
            self.s.failure_rate
            and len(recent) >= self.s.min_calls
            and Fraction(sum(recent), len(recent)) >= Fraction(str(self.s.failure_rate))
        )

    def outcome(self, permit: int, result: str) -> None:
        if permit != self.generation:
            return  # given before the last transition: ignored
        if self.state == HALF_OPEN:
            if result == "success":
                self.move(CLOSED)
            elif result == "failure":
                self.move(OPEN)
            else:
                self.probes -= 1
            return
        if result == "neutral":
            return
        self.history.append(result == "failure")
        if result == "failure" and self.should_open():
            self.move(OPEN)


class BreakerMachine(RuleBasedStateMachine):
    examples = 0
    calls = Bundle("calls")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.seen: list[tuple[str, str]] = []

    @initialize(
        threshold=st.integers(0, 6),
        rate=st.sampled_from([0.0, 0.25, 0.5, 0.7, 1.0]),
        window=st.integers(1, 8),
        data=st.data(),
        cooldown=st.sampled_from([0.5, 1.0, 5.0]),
        probes=st.integers(1, 3),
    )
    def setup(
        self,
        threshold: int,
        rate: float,
        window: int,
        data: st.DataObject,
        cooldown: float,
        probes: int,
    ) -> None:
        type(self).examples += 1
        min_calls = data.draw(st.integers(1, window), label="min_calls")
        s = BreakerSettings(threshold, rate, window, min_calls, cooldown, probes)
        self.breaker = CircuitBreaker(
            "svc.verb",
            s,
            clock=self.clock,
            on_change=lambda b, old, new: self.seen.append((old, new)),
        )
        self.model = Model(s, self.clock)

    @rule(target=calls)
    def start_call(self) -> tuple[int | None, ...]:
        permit = self.breaker.try_acquire()
        expected = self.model.acquire()
        assert permit == expected
        return (permit,)

    @rule(call=consumes(calls), result=st.sampled_from(["success", "failure", "neutral"]))
    def end_call(self, call: tuple[int | None, ...], result: str) -> None:
        (permit,) = call
        if permit is None:
            return  # that call failed fast: there is nothing to report
        getattr(self.breaker, f"on_{result}")(permit)
        self.model.outcome(permit, result)

    @rule(seconds=st.sampled_from([0.01, 0.3, 0.5, 1.0, 2.5, 10.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule()
    def look(self) -> None:
        assert self.breaker.state == self.model.look()

    @rule()
    def retry_after_is_consistent(self) -> None:
        after = self.breaker.retry_after()
        if self.model.state == OPEN:
            assert after == pytest.approx(
                max(0.0, self.model.opened_at + self.model.s.cooldown - self.clock())
            )
        else:
            assert after == 0.0

    @invariant()
    def same_state(self) -> None:
        assert self.breaker._state == self.model.state

    @invariant()
    def each_transition_reported_once(self) -> None:
        assert self.seen == self.model.transitions

    @invariant()
    def probes_within_limit(self) -> None:
        if self.model.state == HALF_OPEN:
            assert 0 <= self.breaker._probes == self.model.probes <= self.model.s.probes


def test_breaker_follows_the_model() -> None:
    BreakerMachine.examples = 0
    run_state_machine_as_test(
        BreakerMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=60,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    assert BreakerMachine.examples >= 200


# -- a few stories, spelled out -------------------------------------------------------------


def make(clock: FakeClock, **kwargs: float) -> CircuitBreaker:
    return CircuitBreaker("svc.verb", BreakerSettings(**kwargs), clock=clock)  # type: ignore[arg-type]


def test_consecutive_failures_open_then_probe_closes() -> None:
    clock = FakeClock()
    b = make(clock, failure_threshold=3, failure_rate=0, cooldown=5.0)
    for _ in range(3):
        permit = b.try_acquire()
        assert permit is not None
        b.on_failure(permit)
    assert b.state == OPEN and b.try_acquire() is None
    assert b.retry_after() == 5.0
    clock.now += 4.99
    assert b.try_acquire() is None
    clock.now += 0.01
    probe = b.try_acquire()
    assert probe is not None and b.state == HALF_OPEN
    assert b.try_acquire() is None  # one probe at a time
    b.on_success(probe)
    assert b.state == CLOSED


def test_a_success_resets_the_consecutive_count() -> None:
    b = make(FakeClock(), failure_threshold=2, failure_rate=0)
    for result in ("failure", "success", "failure", "success", "failure"):
        permit = b.try_acquire()
        assert permit is not None
        getattr(b, f"on_{result}")(permit)
    assert b.state == CLOSED


def test_failure_rate_needs_min_calls() -> None:
    b = make(FakeClock(), failure_threshold=0, failure_rate=0.5, window=4, min_calls=4)
    for result in ("success", "failure", "success"):
        permit = b.try_acquire()
        assert permit is not None
        getattr(b, f"on_{result}")(permit)
    assert b.state == CLOSED
    permit = b.try_acquire()
    assert permit is not None
    b.on_failure(permit)  # 2 of 4
    assert b.state == OPEN


def test_failed_probe_reopens_and_stale_outcomes_are_ignored() -> None:
    clock = FakeClock()
    b = make(clock, failure_threshold=1, cooldown=1.0, probes=2)
    old = b.try_acquire()
    first = b.try_acquire()
    assert old is not None and first is not None
    b.on_failure(first)
    assert b.state == OPEN
    b.on_success(old)  # was in flight when the breaker opened: ignored
    assert b.state == OPEN
    clock.now += 1.0
    p1, p2 = b.try_acquire(), b.try_acquire()
    assert p1 is not None and p2 is not None and b.try_acquire() is None
    b.on_neutral(p2)  # gives its slot back
    p3 = b.try_acquire()
    assert p3 is not None
    b.on_failure(p1)
    assert b.state == OPEN
    b.on_success(p3)  # from the half-open generation: ignored
    assert b.state == OPEN
