"""How long and how hard each form of the run drives: smoke, quick, default, full."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Plan:
    name: str
    use_wrk: bool  # False: the Python closed loop finds the maximum (smoke, no wrk needed)
    # The maximum-rate search: one closed-loop run per connection count (wrk or Python clients),
    # and `measure.choose` picks the maximum among them. More connections is not always more:
    # the naive design's 16-connection pool degrades, sharevault's coalescing gets bigger batches.
    sweep: tuple[int, ...]
    # The whole curve (bench/curve.py): naive and sharevault interleaved at each of these
    # connection counts, on each workload; the maximum of each is chosen among its points.
    curve: tuple[int, ...]
    # The latency budget (bench/hopbudget.py): closed loop at these connection counts, hop_s each.
    hop_connections: tuple[int, ...]
    hop_s: float
    connections: int  # the one fixed closed-loop load outside the search (the py-spy profile)
    warmup_s: float  # once per system, at the sweep's first point
    max_s: float  # each point of the sweep
    open_s: float  # open-loop run per system
    open_fraction: float  # open-loop rate as a fraction of the naive design's maximum
    open_rate_cap: float  # the Python driver's own ceiling on two shared cores
    idle_s: float  # background CPU of the shared services, measured before each system
    backlog: int  # messages in the drain backlogs (sharevault and raw)
    backlog_identities: int  # backlog messages overwrite this many identities round-robin
    raw_upsert_s: float
    big_backlog: int = 0  # worker RSS curve while this many drain (--full)
    soak_s: float = 0.0  # gateway RSS over a long open-loop run (--full)
    profile_s: float = 0.0  # py-spy on gateway and worker under load (not measured)
    check_every: int = 50  # read back one accepted write in this many


SMOKE = Plan(
    name="smoke",
    use_wrk=False,
    sweep=(8,),
    curve=(8,),
    hop_connections=(4,),
    hop_s=1.0,
    connections=8,
    warmup_s=0.3,
    max_s=1.5,
    open_s=1.5,
    open_fraction=0.0,
    open_rate_cap=40,
    idle_s=0.0,
    backlog=300,
    backlog_identities=100,
    raw_upsert_s=1.0,
    big_backlog=200,  # the --full paths, in miniature
    soak_s=1.0,
    check_every=5,
)
DEFAULT = Plan(
    name="default",
    use_wrk=True,
    sweep=(64, 128, 256),
    curve=(16, 32, 64, 128, 256),
    hop_connections=(16, 64),
    hop_s=10,
    connections=64,
    warmup_s=3,
    # 15 s per point (the single run before the sweep took 20 s): three points per system add
    # about two minutes to the run.
    max_s=15,
    open_s=20,
    open_fraction=0.5,
    open_rate_cap=1500,
    idle_s=3,
    backlog=100_000,
    backlog_identities=20_000,
    raw_upsert_s=10,
    profile_s=20,
)
QUICK = replace(
    DEFAULT,
    name="quick",
    sweep=(64, 128),
    curve=(16, 64, 256),
    hop_s=5,
    warmup_s=1,
    max_s=6,
    open_s=6,
    idle_s=1,
    backlog=20_000,
    backlog_identities=4_000,
    raw_upsert_s=4,
    profile_s=0,
)
FULL = replace(DEFAULT, name="full", big_backlog=1_000_000, soak_s=600)

PLANS = {p.name: p for p in (SMOKE, QUICK, DEFAULT, FULL)}
