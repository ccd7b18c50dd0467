"""The leaky buckets (GCRA) behind the rate limits, on a clock the test moves."""

from __future__ import annotations

from sharevault.service.ratelimit import Limiter


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def admitted(limiter: Limiter, key: str, tries: int) -> int:
    taken = 0
    for _ in range(tries):
        if not limiter.full(key):
            limiter.count(key)
            taken += 1
    return taken


def test_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = Limiter(20, 1.0, "test", clock=clock)
    assert admitted(limiter, "a", 50) == 20
    assert limiter.full("a")
    assert admitted(limiter, "b", 5) == 5  # each key its own bucket
    clock.now += 1.0
    assert admitted(limiter, "a", 5) == 1
    clock.now += 5.0
    assert admitted(limiter, "a", 10) == 5
    clock.now += 20.0  # idle for burst / rate: the whole burst again
    assert admitted(limiter, "a", 50) == 20


def test_a_fraction_of_a_second_and_a_faster_rate() -> None:
    clock = Clock()
    limiter = Limiter(2, 10.0, "test", clock=clock)
    assert admitted(limiter, "a", 5) == 2
    clock.now += 0.1
    assert admitted(limiter, "a", 5) == 1


def test_burst_zero_is_no_limit() -> None:
    limiter = Limiter(0, 1.0, "test")
    assert not limiter.on
    assert admitted(limiter, "a", 1_000) == 1_000
    assert len(limiter) == 0


def test_keys_whose_bucket_refilled_are_swept_and_the_keys_held_stay_bounded() -> None:
    clock = Clock()
    limiter = Limiter(5, 1.0, "test", max_keys=2_000, clock=clock)
    for n in range(1_500):
        limiter.count(f"old-{n}")
    clock.now += 5.0  # every bucket full again: they are as good as never seen
    for n in range(1_500):
        limiter.count(f"new-{n}")
    assert len(limiter) <= 1_500 + 1  # the old ones went with the sweep the new ones set off
    for n in range(10_000):
        limiter.count(f"busy-{n}")  # all live: the oldest go first, memory stays bounded
    assert len(limiter) <= 2_000
    assert limiter.full("busy-9999") is False
    assert admitted(limiter, "busy-9999", 10) == 4  # the newest kept their counts
