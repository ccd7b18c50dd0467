"""Ratios against the baselines of the same run, the issue's targets, and the capacity model."""

from __future__ import annotations

from typing import Any

from bench import curvereport
from bench.curvereport import fmt, table
from bench.measure import P99_BOUND_MS

CORES = (8, 32, 128)


def _get(doc: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def max_runs(res: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    """The maximum-rate results of the HTTP systems, labelled as the tables show them."""
    s = res["systems"]
    return [
        ("(a) bare aiohttp", _get(s, "bare", "max")),
        ("(b) naive direct write", _get(s, "naive", "max")),
        ("sharevault end to end", _get(s, "sharevault", "max")),
        ("sharevault, storage down", _get(s, "sharevault", "accept_only", "max")),
    ]


def rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per system: throughput, latency, CPU per share, against naive and bare."""
    s = res["systems"]
    naive = _get(s, "naive", "max") or {}
    out = []
    for label, m in max_runs(res):
        if m:
            out.append(_http_row(label, m, naive, _get(s, "bare", "max", "accepted_per_s")))
    raw_drain = _get(s, "raw", "drain", "rate_from_first")
    queue = [
        ("(c) raw publish+confirm", _get(s, "raw", "publish")),
        ("(d) raw batched upsert", _get(s, "raw_upsert")),
        ("(e) raw consume+batched upsert", _get(s, "raw", "drain")),
        ("sharevault backlog drain", _get(res, "backlog", "sharevault")),
    ]
    for label, m in queue:
        if m:
            rate = m.get("rate_from_first", m.get("rate"))
            per = m.get("cpu_s_per_1000") or {}
            out.append(
                {
                    "system": label,
                    "rate": rate,
                    "x_naive": _ratio(rate, naive.get("accepted_per_s")),
                    "x_raw_drain": _ratio(rate, raw_drain),
                    "cpu_ms_per_share": round(
                        sum(v for k, v in per.items() if k != "postgres_own"), 4
                    ),
                    "pg_ms_per_share": per.get("postgres"),
                }
            )
    return out


def _http_row(
    label: str, m: dict[str, Any], naive: dict[str, Any], bare_rate: float | None
) -> dict[str, Any]:
    rate, lat = m["accepted_per_s"], m["latency_ms"]
    cpu, pg = m.get("cpu_s_per_1000_total"), _get(m, "cpu_s_per_1000", "postgres")
    return {
        "system": label,
        "connections": m.get("connections"),
        "rate": rate,
        "x_naive": _ratio(rate, naive.get("accepted_per_s")),
        "x_bare": _ratio(rate, bare_rate),
        "p50": lat["p50"],
        "p95": lat["p95"],
        "p99": lat["p99"],
        "cpu_ms_per_share": cpu,
        "cpu_x_naive": _ratio(cpu, naive.get("cpu_s_per_1000_total")),
        "pg_ms_per_share": pg,
        "pg_x_naive": _ratio(pg, _get(naive, "cpu_s_per_1000", "postgres")),
        "peak_rss_mb": max((m.get("peak_rss_mb") or {}).values(), default=None),
    }


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the figure measured in this run and whether it holds."""
    s = res["systems"]
    naive, sv = _get(s, "naive", "max") or {}, _get(s, "sharevault", "max") or {}
    accept = _get(s, "sharevault", "accept_only", "max") or {}
    accept_x = _ratio(accept.get("accepted_per_s"), naive.get("accepted_per_s"))
    e2e = _ratio(sv.get("accepted_per_s"), naive.get("accepted_per_s"))
    p99 = _get(sv, "latency_ms", "p99")
    cpu = _ratio(sv.get("cpu_s_per_1000_total"), naive.get("cpu_s_per_1000_total"))
    pg = _ratio(_get(sv, "cpu_s_per_1000", "postgres"), _get(naive, "cpu_s_per_1000", "postgres"))
    pg_own = _ratio(
        _get(sv, "cpu_s_per_1000", "postgres_own"), _get(naive, "cpu_s_per_1000", "postgres_own")
    )
    drain = _ratio(
        _get(res, "backlog", "sharevault", "rate_from_first"),
        _get(s, "raw", "drain", "rate_from_first"),
    )
    backlog = _get(res, "backlog", "sharevault") or {}
    per_message = _ratio(backlog.get("messages"), backlog.get("ready_before"))
    big = _get(res, "backlog", "sharevault_big") or _get(res, "backlog", "sharevault") or {}
    worker_flat = _get(big, "worker_rss_flatness", "spread")
    soak = _get(s, "sharevault", "soak", "flatness", "spread")

    def holds(value: float | None, ok: bool) -> bool | None:
        return None if value is None else ok

    return [
        {
            "target": f"sustained end to end >= 1.0x naive at p99 <= {P99_BOUND_MS:g} ms",
            "measured": f"{e2e}x naive, p99 {p99} ms",
            "holds": holds(
                e2e, e2e is not None and p99 is not None and e2e >= 1.0 and p99 <= P99_BOUND_MS
            ),
        },
        {
            "target": "accept rate, storage down >= 1.5x naive",
            "measured": f"{accept_x}x naive",
            "holds": holds(accept_x, (accept_x or 0) >= 1.5),
        },
        {
            "target": "total CPU per stored share <= 1.0x naive",
            "measured": f"{cpu}x naive",
            "holds": holds(cpu, cpu is not None and cpu <= 1.0),
        },
        {
            "target": "Postgres CPU per stored share <= 0.3x naive",
            "measured": f"{pg}x naive (cluster), {pg_own}x (own backends + helpers)",
            "holds": holds(pg, pg is not None and pg <= 0.3),
        },
        {
            "target": "backlog drain >= 0.9x raw consume + batched upsert",
            # The publisher coalesces as the gateway does: say how many shares a message holds
            # (the raw baseline's messages hold one each).
            "measured": f"{drain}x raw ({per_message} shares per broker message)",
            "holds": holds(drain, drain is not None and drain >= 0.9),
        },
        {
            "target": "worker RSS flat (within 20 %) while 1,000,000 messages drain",
            "measured": f"spread {worker_flat} over {fmt(big.get('messages'))} messages"
            f" (second half {_get(big, 'worker_rss_flatness', 'second_half_spread')})"
            + ("" if (big.get("messages") or 0) >= 1_000_000 else " (1M only with --full)"),
            "holds": None
            if worker_flat is None or (big.get("messages") or 0) < 1_000_000
            else worker_flat <= 0.2,
        },
        {
            "target": "gateway RSS flat over a 10-minute run",
            "measured": "not run (--full only)" if soak is None else f"spread {soak}",
            "holds": None if soak is None else soak <= 0.2,
        },
    ]


def capacity(res: dict[str, Any]) -> dict[str, Any]:
    """With N cores per component, the rate each component sustains; the slowest one bounds it."""
    s = res["systems"]
    designs = {
        "sharevault": _get(s, "sharevault", "max", "cpu_s_per_1000"),
        "sharevault, storage down (accept only)": _get(
            s, "sharevault", "accept_only", "max", "cpu_s_per_1000"
        ),
        "naive": _get(s, "naive", "max", "cpu_s_per_1000"),
    }
    parts = {
        "sharevault": ["gateway", "worker", "rabbitmq", "postgres"],
        "sharevault, storage down (accept only)": ["gateway", "rabbitmq"],
        "naive": ["app", "postgres"],
    }
    out: dict[str, Any] = {}
    for name, per1000 in designs.items():
        if not per1000:
            continue
        cost = {p: per1000[p] / 1000 for p in parts[name] if per1000.get(p)}
        if not cost:
            continue
        total = sum(cost.values())
        by_cores = {}
        for n in CORES:
            rates = {p: round(n / c) for p, c in cost.items()}
            bottleneck = min(rates, key=lambda p: rates[p])
            by_cores[str(n)] = {
                "per_component": rates,
                "sustained": rates[bottleneck],
                "bottleneck": bottleneck,
                "one_box_of_n_cores": round(n / total),
            }
        out[name] = {
            "cpu_ms_per_share": {p: round(c * 1000, 4) for p, c in cost.items()},
            "two_core_box_predicted": round(2 / total),
            "cores": by_cores,
        }
    return out


CAPACITY_NOTES = (
    "Linear in cores: gateways and workers are processes that scale out; RabbitMQ and PostgreSQL "
    "are assumed to use their cores. Two limits are outside the model: one quorum queue is one "
    "Raft leader (one Erlang process, about one core of leader work), so beyond that the share "
    "queue must be sharded; and single-row commits serialise on WAL flush, which caps the naive "
    "design before its CPU does, while batched commits amortise it."
)


def _open_rows(res: dict[str, Any]) -> list[list[str]]:
    body = []
    for label, key in (("(b) naive direct write", "naive"), ("sharevault", "sharevault")):
        m = _get(res["systems"], key, "open")
        if not m:
            continue
        lat, commit, ryw = m["latency_ms"], m["accept_to_commit_ms"], m["read_your_writes"]
        body.append(
            [
                label,
                fmt(m["rate"], 0),
                fmt(m["accepted_per_s"], 0),
                fmt(lat["p50"], 1),
                fmt(lat["p99"], 1),
                fmt(commit["p50"], 1),
                fmt(commit["p99"], 1),
                fmt(m["committed"]) if key == "sharevault" else "all",
                f"{ryw['ok']}/{ryw['checked']}",
                fmt(m.get("cpu_s_per_1000_total"), 3),
            ]
        )
    return body


def _sweep_table(res: dict[str, Any]) -> list[str]:
    """System x connections: shares/s and p99 of every point, the chosen maximum in bold."""
    runs = [(label, m) for label, m in max_runs(res) if m and m.get("sweep")]
    counts = sorted({p["connections"] for _, m in runs for p in m["sweep"]})
    body = []
    for label, m in runs:
        points = {p["connections"]: p for p in m["sweep"]}
        chosen = _get(m, "chosen", "connections")
        cells = []
        for n in counts:
            p = points.get(n)
            if p is None:
                cells.append("-")
                continue
            text = f"{fmt(p['accepted_per_s'], 0)}/s, p99 {fmt(p['latency_ms']['p99'], 1)} ms"
            if p.get("failed"):
                text += f", {fmt(p['failed'])} failed"
            cells.append(f"**{text}**" if n == chosen else text)
        body.append([label, *cells])
    return table(["system", *(f"{n} connections" for n in counts)], body) if body else []


def _cpu_rows(res: dict[str, Any]) -> list[list[str]]:
    s = res["systems"]
    runs = [
        *max_runs(res),
        ("(b) naive, open loop", _get(s, "naive", "open")),
        ("sharevault, open loop", _get(s, "sharevault", "open")),
        ("sharevault backlog drain", _get(res, "backlog", "sharevault")),
    ]
    body = []
    for label, m in runs:
        if not m:
            continue
        per, rss = m.get("cpu_s_per_1000") or {}, m.get("peak_rss_mb") or {}
        front = per.get("gateway", per.get("app"))
        driver = m.get("driver_cpu_s")
        shares = m.get("accepted") or m.get("messages")
        body.append(
            [
                label,
                fmt(front, 3),
                fmt(per.get("worker"), 3),
                fmt(per.get("rabbitmq"), 3),
                fmt(per.get("postgres"), 3),
                fmt(per.get("postgres_own"), 3),
                fmt(round(driver / shares * 1000, 3) if driver and shares else None, 3),
                fmt(rss.get("gateway", rss.get("app")), 1),
                fmt(rss.get("worker"), 1),
            ]
        )
    return body


def render(res: dict[str, Any]) -> str:
    """The tables printed after a run (Markdown: the README shows them as they are)."""
    lines = curvereport.render(res) + curvereport.render_hops(res)
    lines += ["", "Maximum rate (" + _driver(res) + "):", ""]
    lines += table(
        [
            "system",
            "connections",
            "shares/s",
            "x naive",
            "x bare",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "CPU ms/share",
            "x naive",
            "PG ms/share",
            "x naive",
            "x raw drain",
        ],
        [
            [
                r["system"],
                fmt(r.get("connections")),
                fmt(r["rate"], 0),
                fmt(r.get("x_naive")),
                fmt(r.get("x_bare")),
                fmt(r.get("p50"), 1),
                fmt(r.get("p95"), 1),
                fmt(r.get("p99"), 1),
                fmt(r.get("cpu_ms_per_share"), 3),
                fmt(r.get("cpu_x_naive")),
                fmt(r.get("pg_ms_per_share"), 3),
                fmt(r.get("pg_x_naive")),
                fmt(r.get("x_raw_drain")),
            ]
            for r in rows(res)
        ],
    )
    sweep = _sweep_table(res)
    if sweep:
        lines += ["", "Maximum-rate search (every point; **bold**: the one chosen above):", ""]
        lines += sweep
        over = [
            label
            for label, m in max_runs(res)
            if m and m.get("sweep") and m["latency_ms"]["p99"] > P99_BOUND_MS
        ]
        if over:
            lines += [
                "",
                f"No point had p99 <= {P99_BOUND_MS:g} ms for {', '.join(over)}:"
                " the point with the lowest p99 stands for the maximum.",
            ]
    lines += ["", "CPU seconds per 1,000 shares by process (= CPU ms per share), peak RSS MB:", ""]
    lines += table(
        [
            "system",
            "app/gateway",
            "worker",
            "RabbitMQ",
            "PostgreSQL (cluster)",
            "PostgreSQL (own backends)",
            "driver",
            "peak RSS app/gateway",
            "peak RSS worker",
        ],
        _cpu_rows(res),
    )
    lines += ["", "Portal-like open loop (Python driver, latency from the due time):", ""]
    lines += table(
        [
            "system",
            "offered/s",
            "answered/s",
            "p50 ms",
            "p99 ms",
            "accept->commit p50 ms",
            "p99 ms",
            "answered committed",
            "read-your-writes ok",
            "CPU ms/share",
        ],
        _open_rows(res),
    )
    lines += ["", "Targets of issue 6:", ""]
    marks = {True: "yes", False: "**no**", None: "not measured"}
    lines += table(
        ["target", "measured", "holds"],
        [[t["target"], t["measured"], marks[t["holds"]]] for t in res.get("targets", [])],
    )
    lines += ["", "Capacity model (CPU per share from the maximum-rate runs):", ""]
    body = []
    for name, model in res.get("capacity", {}).items():
        for n, c in model["cores"].items():
            per = ", ".join(f"{p} {fmt(v)}" for p, v in c["per_component"].items())
            body.append(
                [name, n, fmt(c["sustained"]), c["bottleneck"], per, fmt(c["one_box_of_n_cores"])]
            )
    lines += table(
        [
            "design",
            "cores per component",
            "sustained shares/s",
            "bottleneck",
            "per component",
            "one box of N cores",
        ],
        body,
    )
    lines += ["", "Disk after the run (overwrite-heavy backlog included):", ""]
    lines += table(
        ["database", "live shares", "MB on disk", "bytes per live share", "dead rows"],
        [
            [
                role,
                fmt(d["live"]),
                fmt(d["total"] / 1e6, 1),
                fmt(d["bytes_per_live_share"]),
                fmt(d["dead"]),
            ]
            for role, d in res.get("disk", {}).items()
        ],
    )
    return "\n".join(lines)


def _driver(res: dict[str, Any]) -> str:
    """How the maximum was found: the driver, the connection counts tried, the rule."""
    runs = [m for _, m in max_runs(res) if m]
    driver = runs[0].get("driver", "?") if runs else "?"
    counts = sorted({p["connections"] for m in runs for p in m.get("sweep", [])})
    tried = ", ".join(str(n) for n in counts) or "?"
    threads = ", 2 threads" if driver == "wrk" else ""
    return (
        f"{driver}{threads}, closed loop at {tried} connections; each system's maximum is its"
        f" highest shares/s with p99 <= {P99_BOUND_MS:g} ms, else its lowest p99"
    )
