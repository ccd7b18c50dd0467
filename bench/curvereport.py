"""Tables of the whole curve (bench/curve.py) and of the latency budget (bench/hopbudget.py)."""

from __future__ import annotations

from typing import Any

LABELS = {
    "fresh": "fresh identities (6-9 KB shares, a new client per request, 10 % overwrites)",
    "overwrite": "overwrite-heavy (10,000 identities round-robin, 8 KB incompressible"
    " JSON.stringified shares)",
}
MARKS = {True: "hold", False: "**miss**"}


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def _parts(per: dict[str, Any] | None, parts: tuple[str, ...]) -> str:
    per = per or {}
    return " / ".join(fmt(per.get(p), 3) for p in parts)


def render(res: dict[str, Any]) -> list[str]:
    """Per workload: every point with its ratios, the worst ratio, the open loop's targets."""
    curve = res.get("curve")
    if not curve:
        return []
    lines: list[str] = []
    for mode, w in curve["workloads"].items():
        lines += ["", f"The whole curve, {LABELS.get(mode, mode)}:", ""]
        body = []
        for r in w["points"]:
            s, n = r["sharevault"], r["naive"]
            body.append(
                [
                    str(r["connections"]),
                    fmt(s["shares_per_s"], 0),
                    fmt(n["shares_per_s"], 0),
                    f"**{fmt(r['x_rate'])}**",
                    f"{fmt(s['p50'], 1)} / {fmt(n['p50'], 1)}",
                    f"{fmt(s['p99'], 1)} / {fmt(n['p99'], 1)}",
                    fmt(r["x_p99"]),
                    f"{fmt(s['cpu_ms_per_share'], 3)} / {fmt(n['cpu_ms_per_share'], 3)}",
                    fmt(r["x_cpu"]),
                    _parts(s["cpu_ms_per_share_by_part"], ("gateway", "worker", "rabbitmq")),
                    fmt((s["cpu_ms_per_share_by_part"] or {}).get("postgres"), 3),
                    _parts(n["cpu_ms_per_share_by_part"], ("app", "postgres")),
                ]
            )
        lines += table(
            [
                "connections",
                "sharevault shares/s",
                "naive shares/s",
                "x naive",
                "p50 ms sv / naive",
                "p99 ms sv / naive",
                "p99 x naive",
                "CPU ms/share sv / naive",
                "CPU x naive",
                "sv gateway / worker / RabbitMQ",
                "sv PostgreSQL",
                "naive app / PostgreSQL",
            ],
            body,
        )
        lines += ["", _worst_line(w["worst"])]
        o, targets = w["open"], w["open_targets"]
        rate = o["naive"]["rate"]
        lines += [
            "",
            f"Open loop at {rate:,.0f}/s (half the naive maximum, capped at the Python driver's"
            " ceiling):",
            "",
        ]
        lines += table(
            ["target", "measured", "result"],
            [[t["target"], t["measured"], MARKS[t["holds"]]] for t in targets],
        )
        if w.get("b_vs_a"):
            lines += _variant(res, w)
    return lines


def _variant(res: dict[str, Any], w: dict[str, Any]) -> list[str]:
    """Sharevault B (BENCH_AB_*) against the default sharevault, point by point, same run."""
    settings = ", ".join(f"{k}={v}" for k, v in res["meta"].get("variant_b", {}).items())
    body = []
    for r, b in zip(w["b_vs_a"], w["b_points"], strict=True):
        s, a = r["sharevault"], r["naive"]  # compare(B, A): "naive" holds A here
        body.append(
            [
                str(r["connections"]),
                f"{fmt(s['shares_per_s'], 0)} / {fmt(a['shares_per_s'], 0)}",
                fmt(r["x_rate"]),
                f"{fmt(s['p50'], 1)} / {fmt(a['p50'], 1)}",
                f"{fmt(s['p99'], 1)} / {fmt(a['p99'], 1)}",
                f"{fmt(s['cpu_ms_per_share'], 3)} / {fmt(a['cpu_ms_per_share'], 3)}",
                fmt(r["x_cpu"]),
                fmt(b["x_rate"]),
            ]
        )
    lines = ["", f"A/B in the same run: sharevault B ({settings}) against A (defaults):", ""]
    lines += table(
        [
            "connections",
            "shares/s B / A",
            "B x A",
            "p50 ms B / A",
            "p99 ms B / A",
            "CPU ms/share B / A",
            "CPU B x A",
            "B x naive",
        ],
        body,
    )
    lines += ["", "B: " + _worst_line(w["b_worst"])]
    lines += [
        f"B open loop: {t['target']}: {t['measured']}: {MARKS[t['holds']]}"
        for t in w["b_open_targets"]
    ]
    return lines


def _worst_line(worst: dict[str, Any]) -> str:
    names = {"x_rate": "shares/s", "x_p99": "p99", "x_cpu": "CPU per share"}
    parts = []
    for key, name in names.items():
        got = worst.get(key)
        if got:
            goal = "every point >= 1.0x" if key == "x_rate" else "every point <= 1.0x"
            verdict = "holds" if got["holds_everywhere"] else "**misses**"
            parts.append(
                f"{name} {got['ratio']:.2f}x naive at {got['connections']} connections"
                f" ({goal}: {verdict})"
            )
    return "Worst ratio: " + "; ".join(parts) + "."


def render_hops(res: dict[str, Any]) -> list[str]:
    """Medians and p99 of each hop, one column pair per traced run."""
    hb = res.get("hop_budget")
    if not hb or not hb.get("runs"):
        return []
    runs = hb["runs"]
    header = ["hop", "what it covers"]
    for run in runs:
        label = f"{run['workload']} {run['connections']} conn."
        header += [f"{label} p50 ms", "p99 ms"]
    body = []
    for hop in hb["hops"]:
        row = [hop, hb["notes"][hop]]
        for run in runs:
            got = run["hop_ms"][hop]
            row += [fmt(got["p50"]), fmt(got["p99"])]
        body.append(row)
    for name, key, note in (
        ("server total", "server_ms", "request in -> response built (one request's own sum)"),
        ("client (driver)", "client_latency_ms", "what the load generator saw"),
    ):
        row = [name, note]
        for run in runs:
            got = run[key]
            row += [fmt(got["p50"]), fmt(got["p99"])]
        body.append(row)
    traced = ", ".join(f"{r['requests']:,}" for r in runs)
    return [
        "",
        "Latency budget of one request, hop by hop (closed loop with SHAREVAULT_HOP_TRACE; hop"
        " percentiles do not add up to the total's):",
        "",
        *table(header, body),
        "",
        f"Requests traced per run: {traced}.",
    ]
