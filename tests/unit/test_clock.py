"""The clock discipline's arithmetic: offset from PostgreSQL's clock, less what the round trip
hides, against MAX_CLOCK_SKEW; and the version clock's injectable source."""

from __future__ import annotations

import time

import pytest

from sharevault.clock import ClockDiscipline, VersionClock

SECOND = 1_000_000_000
DB = 1_733_000_000 * 1_000_000  # PostgreSQL's clock at the reading, µs


def reading(offset: float, round_trip: float) -> tuple[int, int, int]:
    """Local ns before and after a query whose answer was DB, this clock `offset` s ahead."""
    middle = DB * 1000 + int(offset * SECOND)
    half = int(round_trip * SECOND / 2)
    return middle - half, DB, middle + half


@pytest.mark.parametrize(
    "offset, round_trip, skewed",
    [
        (0.0, 0.001, False),
        (0.49, 0.0, False),
        (0.51, 0.0, True),
        (-0.51, 0.0, True),
        (-2.0, 0.01, True),
        # 0.6 s off, but the reading took 0.4 s: the true offset may be as little as 0.4 s.
        (0.6, 0.4, False),
        (0.8, 0.4, True),
    ],
)
def test_skewed_only_when_off_beyond_max_skew_for_certain(
    offset: float, round_trip: float, skewed: bool
) -> None:
    discipline = ClockDiscipline(max_skew=0.5, interval=10)
    assert not discipline.skewed and discipline.problem() is None  # nothing measured yet
    discipline.record(*reading(offset, round_trip))
    assert discipline.offset == pytest.approx(offset, abs=1e-3)
    assert discipline.uncertainty == pytest.approx(round_trip / 2, abs=1e-6)
    assert discipline.skewed is skewed
    problem = discipline.problem()
    assert (problem is not None) is skewed
    if problem is not None:
        assert problem.startswith("clock_skew: ") and "MAX_CLOCK_SKEW 0.5s" in problem


def test_retry_after_is_the_next_check_in_whole_seconds() -> None:
    assert ClockDiscipline(0.5, 10).retry_after == "10"
    assert ClockDiscipline(0.5, 0.1).retry_after == "1"


def test_versions_follow_the_injected_source_and_never_go_back() -> None:
    now = [5 * SECOND]
    clock = VersionClock(lambda: now[0])
    assert clock.next() == 5_000_000
    now[0] -= SECOND  # the source stepped back: versions still increase
    assert clock.next() == 5_000_001
    now[0] = 7 * SECOND
    assert clock.next() == 7_000_000


@pytest.mark.parametrize("worker_offset", [-2.0, 0.0, 3.0])
def test_a_worker_judges_versions_by_postgresqls_clock_whatever_its_own_says(
    worker_offset: float,
) -> None:
    before, db, after = reading(worker_offset, 0.002)
    worker = ClockDiscipline(max_skew=0.5, interval=10, gateway=False, source=lambda: after)
    worker.record(before, db, after)
    assert worker.skewed is (worker_offset != 0.0)  # logged, yet it refuses nothing for that
    latest = worker.latest_version()
    # A gateway 0.4 s ahead of PostgreSQL is within the skew: its versions are believed ...
    assert latest > db + 400_000
    # ... one 0.6 s ahead is not (up to the 1 ms this worker's reading could not tell).
    assert latest < db + 600_000
    # Before any reading, the worker's own clock stands in for PostgreSQL's.
    fresh = ClockDiscipline(max_skew=0.5, interval=10, gateway=False, source=lambda: after)
    assert fresh.latest_version() == after // 1000 + 500_000


def test_a_step_of_the_wall_clock_counts_at_once_not_at_the_next_reading() -> None:
    step = [0]
    discipline = ClockDiscipline(0.5, 10, source=lambda: time.time_ns() + step[0])
    now = discipline.source()
    discipline.record(now - 1000, (now // 1000), now + 1000)
    assert not discipline.skewed
    step[0] = 2 * SECOND  # NTP steps the clock (or someone sets it) right after the reading
    assert discipline.skewed and discipline.offset == pytest.approx(2.0, abs=0.01)
    step[0] = 0
    assert not discipline.skewed
