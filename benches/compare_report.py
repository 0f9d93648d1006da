#!/usr/bin/env python3
"""Turns the raw records of benches/compare.sh into the markdown table and the JSON summary.

Usage: compare_report.py RUN_DIR OUT_MD OUT_JSON
RUN_DIR holds records.jsonl (one object per scenario, target, phase and round), scenarios.jsonl
and meta.json, all written by compare.sh. Each figure reported is the median over the rounds;
errors are summed over them.
"""

import json
import statistics
import sys
from pathlib import Path

PEERS = ("nginx", "haproxy")
# oha reports requests cut off by the end of a closed-loop (-z) run as errors; on HTTP/2 it
# cannot wait for them (-w is ignored there). They are artefacts of stopping, not failures.
DEADLINE_KINDS = {"aborted due to deadline", "operation was canceled"}


def load_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def errors_of(record):
    """non-2xx + connection errors; closed-loop deadline artefacts left out."""
    if record is None:
        return 0
    kinds = record.get("error_kinds") or {}
    conn = sum(
        n
        for kind, n in kinds.items()
        if not (record["phase"] == "max" and kind in DEADLINE_KINDS)
    )
    return record["non_2xx"] + conn


def fmt(value, digits=1, suffix=""):
    if value is None:
        return "–"
    if isinstance(value, float) and digits == 0:
        return f"{value:,.0f}{suffix}"
    return f"{value:,.{digits}f}{suffix}"


def fmt_ms(value):
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def mib(kib):
    return None if kib is None else kib / 1024


def ratio(ours, best):
    if ours is None or best is None or best == 0:
        return None
    return ours / best


MEDIAN_KEYS = (
    "rps",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "proxy_cpu_us_per_req",
    "proxy_cpu_util",
    "rss_end_kib",
)


def median_record(rounds):
    """One record for a target's phase: the last round's, with the median of each figure."""
    if not rounds:
        return None
    merged = dict(rounds[-1])
    for key in MEDIAN_KEYS:
        values = [r[key] for r in rounds if r.get(key) is not None]
        merged[key] = statistics.median(values) if values else None
    merged["rounds"] = len(rounds)
    merged["cpu_us_per_req_rounds"] = [r.get("proxy_cpu_us_per_req") for r in rounds]
    merged["error_count"] = sum(errors_of(r) for r in rounds)
    return merged


def summarize(scenario, records):
    rows = []
    for target in dict.fromkeys(r["target"] for r in records):
        by_phase = {
            phase: median_record(
                [r for r in records if r["target"] == target and r["phase"] == phase]
            )
            for phase in ("max", "rate")
        }
        by_phase = {k: v for k, v in by_phase.items() if v is not None}
        mx, rt = by_phase.get("max"), by_phase.get("rate")
        any_rec = rt or mx
        row = {
            "target": target,
            "label": any_rec["label"],
            "max_rps": mx and mx["rps"],
            "max_proxy_cpu_util": mx and mx["proxy_cpu_util"],
            "rate_rps": rt and rt["rps"],
            "p50_ms": rt and rt["p50_ms"],
            "p99_ms": rt and rt["p99_ms"],
            "p999_ms": rt and rt["p999_ms"],
            "errors": (mx or {}).get("error_count", 0) + (rt or {}).get("error_count", 0),
            "cpu_us_per_req": rt and rt["proxy_cpu_us_per_req"],
            "cpu_us_per_req_at_max": mx and mx["proxy_cpu_us_per_req"],
            "rss_before_kib": any_rec["rss_before_kib"],
            "rss_after_kib": rt and rt["rss_end_kib"],
            "idle_connections": rt and rt["idle_connections"],
            "origin_requests": rt and rt["origin_requests"],
            "phases": by_phase,
        }
        rows.append(row)
    by_target = {r["target"]: r for r in rows}
    ratios = {}
    ours = by_target.get("parapet")
    peers = [by_target[p] for p in PEERS if p in by_target]
    if ours and peers:
        for key, better in (
            ("cpu_us_per_req", min),
            ("p99_ms", min),
            ("p999_ms", min),
            ("max_rps", max),
        ):
            candidates = [p for p in peers if p[key] is not None]
            if not candidates:
                continue
            best = better(candidates, key=lambda p: p[key])
            ratios[key] = {
                "parapet": ours[key],
                "best_peer": best["target"],
                "best_peer_value": best[key],
                "ratio": ratio(ours[key], best[key]),
            }
    return rows, ratios


def notes_for(scenario, row):
    notes = []
    idle = row.get("idle_connections")
    if idle:
        notes.append(f"idle conns open at end {idle.get('alive_at_end', '?')}/{idle['requested']}")
    served = row.get("origin_requests")
    names = scenario.get("origin_names") or []
    if served and names and sum(served):
        total = sum(served)
        slow = [f"{n} {100 * s / total:.1f}%" for n, s in zip(names, served) if n.startswith("slow")]
        notes.extend(slow)
    rate = row["phases"].get("rate")
    if rate and rate.get("proxy_cpu_util") is not None and rate["proxy_cpu_util"] > 0.75:
        notes.append(f"near saturation at the offered rate (proxy CPU {100 * rate['proxy_cpu_util']:.0f}%)")
    if row["max_proxy_cpu_util"] is not None and row["max_proxy_cpu_util"] < 0.9:
        notes.append("proxy below 90% CPU at max")
    other = [
        (phase, rec.get("proxy_core_other_util"))
        for phase, rec in row["phases"].items()
        if rec.get("proxy_core_other_util") is not None
    ]
    busy = [f"{phase} {100 * u:.0f}%" for phase, u in other if u > 0.05]
    if busy:
        notes.append("other work on the proxy CPU: " + ", ".join(busy))
    return "; ".join(notes)


def compression_bar(scenarios):
    """The compression issue's bar, as ratios of proxy CPU per request (rate phase; max phase in
    brackets): a compressed cache hit (gzip, br) ≤ 1.2x an uncompressed 100 KiB hit, and a
    compressing miss at default levels ≤ nginx at gzip level 1."""
    rows = {(sc["name"], r["target"]): r for sc in scenarios for r in sc["targets"]}

    def cpu(name, target, key):
        row = rows.get((name, target))
        return row and row[key]

    checks = [
        ("cache hit, gzip ÷ uncompressed 100 KiB hit", ("compress_100k_json_hit", "parapet"), ("cache_hit_100k", "parapet"), 1.2),
        ("cache hit, br ÷ uncompressed 100 KiB hit", ("compress_100k_json_hit", "parapet_br"), ("cache_hit_100k", "parapet"), 1.2),
        ("miss, Parapet gzip 2 ÷ nginx gzip 1", ("compress_100k_json_miss", "parapet"), ("compress_100k_json_miss", "nginx"), 1.0),
        ("miss, Parapet br 3 ÷ nginx gzip 1", ("compress_100k_json_miss", "parapet_br"), ("compress_100k_json_miss", "nginx"), 1.0),
    ]
    lines = []
    for what, num, den, bar in checks:
        a, b = cpu(*num, "cpu_us_per_req"), cpu(*den, "cpu_us_per_req")
        if a is None or b is None:
            continue
        am, bm = cpu(*num, "cpu_us_per_req_at_max"), cpu(*den, "cpu_us_per_req_at_max")
        r, rm = ratio(a, b), ratio(am, bm)
        verdict = "rate: " + ("meets" if r <= bar else "misses")
        if rm is not None:
            verdict += ", max: " + ("meets" if rm <= bar else "misses")
        lines.append(
            f"| {what} | {a:,.1f} ÷ {b:,.1f} | **{r:.2f}×** | "
            f"{'–' if rm is None else f'{rm:.2f}×'} | ≤ {bar:.1f}× | {verdict} |"
        )
    if not lines:
        return []
    return [
        "## Compression bar (proxy CPU µs/req ratios)\n",
        "| check | Parapet ÷ reference, µs/req at the offered rate | ratio | ratio at max | bar | verdict |",
        "|---|--:|--:|--:|--:|---|",
        *lines,
        "",
        "The hit rows compare two scenarios: unless `BENCH_RATE` fixes one rate for both, their "
        "offered rates differ (each is a fraction of its own slowest proxy's max), and at a low rate "
        "a proxy's fixed per-second work is spread over fewer requests; at max, cache_hit_100k is "
        "often limited by the load side (see its *proxy CPU at max*). For a clean hit check run "
        "`BENCH_RATE=1000 BENCH_SCENARIOS=cache_hit_100k,compress_100k_json_hit`. The miss rows "
        "compare targets of the same run at the same rate.",
        "",
    ]


def per_round(row):
    """Every round's CPU µs/req at the offered rate, to show the spread behind the median."""
    rate = row["phases"].get("rate") or {}
    values = rate.get("cpu_us_per_req_rounds") or []
    return " / ".join(fmt(v) for v in values) or "–"


def render(meta, scenarios):
    out = []
    out.append("# Parapet vs nginx vs HAProxy on loopback\n")
    out.append(
        f"{meta['date']} · {meta['cores']} cores ({meta['cpu']}), shared machine · kernel "
        f"{meta['kernel']} · Parapet {meta['parapet_rev']}, nginx {meta['nginx']}, HAProxy "
        f"{meta['haproxy']}, oha {meta['oha']} · load average at the end {meta['loadavg_at_end']}\n"
    )
    out.append(
        f"Command: `{meta['command']}`. Each proxy has one worker (Parapet `threads = 1`, nginx "
        f"`worker_processes 1`, HAProxy `nbthread 1`) pinned to CPU {meta['proxy_cpu']}; origins "
        f"(nginx), oha and helpers share CPU {meta['load_cpu']}. *max* = closed loop, "
        f"{meta['connections']} requests in flight, {meta['max_phase_s']} s. Latencies = open loop at "
        f"the offered rate ({meta['rate_rule']}), {meta['rate_phase_s']} s, corrected for coordinated "
        "omission. CPU µs/req = proxy utime+stime (all its processes) ÷ requests, at the offered "
        "rate. Errors = non-2xx + connection errors over both phases. Every figure is the median of "
        f"{meta.get('rounds', 1)} rounds (targets interleaved within a round; errors summed).\n"
    )
    for sc in scenarios:
        out.append(f"## {sc['name']}: {sc['title']}\n")
        out.append(f"{sc['what']} Offered rate for the latency columns: {sc['offered_rate']:,} req/s.\n")
        out.append(
            "| target | max req/s | proxy CPU at max | p50 ms | p99 ms | p99.9 ms | errors "
            "| CPU µs/req | rounds | CPU µs/req at max | RSS MiB start → end | notes |"
        )
        out.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
        for row in sc["targets"]:
            util = row["max_proxy_cpu_util"]
            rss = (
                "–"
                if row["rss_before_kib"] is None
                else f"{mib(row['rss_before_kib']):.1f} → {mib(row['rss_after_kib']):.1f}"
            )
            out.append(
                f"| {row['label']} | {fmt(row['max_rps'], 0)} | "
                f"{'–' if util is None else f'{100 * util:.0f}%'} | {fmt_ms(row['p50_ms'])} | "
                f"{fmt_ms(row['p99_ms'])} | {fmt_ms(row['p999_ms'])} | {row['errors']} | "
                f"{fmt(row['cpu_us_per_req'])} | {per_round(row)} | "
                f"{fmt(row['cpu_us_per_req_at_max'])} | {rss} | "
                f"{notes_for(sc, row)} |"
            )
        r = sc["ratios"]
        if r:
            parts = []
            names = {"cpu_us_per_req": "CPU/req", "p99_ms": "p99", "p999_ms": "p99.9", "max_rps": "max req/s"}
            for key in ("cpu_us_per_req", "p99_ms", "p999_ms", "max_rps"):
                if key in r and r[key]["ratio"] is not None:
                    parts.append(f"{names[key]} **{r[key]['ratio']:.2f}×** (best peer: {r[key]['best_peer']})")
            out.append(
                "\nParapet ÷ best peer (below 1 is better for CPU/req and latency, above 1 is better "
                "for max req/s): " + ", ".join(parts) + ".\n"
            )
        else:
            out.append("")
    out.extend(compression_bar(scenarios))
    if meta.get("not_yet"):
        out.append("## Not measured yet (skipped in this run, or no scenario yet)\n")
        for item in meta["not_yet"]:
            out.append(f"- {item}")
        out.append("")
    return "\n".join(out) + "\n"


def main():
    run_dir, out_md, out_json = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    meta = json.loads((run_dir / "meta.json").read_text())
    records = load_lines(run_dir / "records.jsonl")
    scenarios = []
    for sc in load_lines(run_dir / "scenarios.jsonl"):
        rows, ratios = summarize(sc, [r for r in records if r["scenario"] == sc["name"]])
        sc = dict(sc, targets=rows, ratios=ratios)
        scenarios.append(sc)
    out_md.write_text(render(meta, scenarios))
    out_json.write_text(json.dumps({"meta": meta, "scenarios": scenarios}, indent=2) + "\n")


if __name__ == "__main__":
    main()
