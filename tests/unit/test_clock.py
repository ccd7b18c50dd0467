"""The clock discipline's arithmetic: offset from PostgreSQL's clock, less what the round trip
hides, against MAX_CLOCK_SKEW; and the version clock's injectable source."""

from __future__ import annotations

import pytest

from sharevault.service.clock import ClockDiscipline, VersionClock

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
    assert discipline.offset == pytest.approx(offset, abs=1e-6)
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
