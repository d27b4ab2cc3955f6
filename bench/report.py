"""Write the side-by-side section of docs/benchmarks.md from what `compare.py` and
`profile.py` measured.

    .venv/bin/python bench/report.py bench/results/compare.json \\
        --profiles bench/results/profile-*.json --doc docs/benchmarks.md

The section lies between two marker comments; the rest of the document (the storage and
delay benchmarks, the analysis) is left as it is. Without the markers the section goes
before the first second-level heading.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BEGIN = "<!-- bench/report.py: begin -->"
END = "<!-- bench/report.py: end -->"
COMMANDS = """\
make bench
# which runs
.venv/bin/python bench/compare.py --reps {reps} --curve-reps {curve_reps} \\
    --out bench/results/compare.json
.venv/bin/python bench/profile.py A --out bench/results/profile-A.json   # and B, C
.venv/bin/python bench/report.py bench/results/compare.json \\
    --profiles bench/results/profile-*.json"""

SCENARIOS = {
    "A": "A: transient, auto-ack, 100 B, 1 producer / 1 consumer",
    "B": "B: persistent, durable queue, confirms (500 in flight), manual ack, prefetch 500, "
         "1 KiB, 1/1",
    "C": "C: as B with 4 producers / 4 consumers",
    "D": "D: 200,000 persistent 1 KiB messages, no consumer, then drained",
    "E-transient": "E: 1,000 msg/s steady, transient, auto-ack, 1 KiB",
    "E-persistent": "E: 1,000 msg/s steady, persistent with confirms, manual ack, 1 KiB",
}
CURVES = {
    "queues": ("Queues (transient, auto-ack, 100 B; 1 queue: 1/1 connections, 10 and 100 "
               "queues: 10 producers / 10 consumers)", ["queues-1", "queues-10", "queues-100"]),
    "connections": ("Connections (producers = consumers; transient, auto-ack, 100 B, one queue)",
                    ["connections-1", "connections-10", "connections-100"]),
    "size": ("Message size (transient, auto-ack, 1/1)",
             ["size-100B", "size-1KiB", "size-64KiB", "size-1MiB"]),
}


@dataclass(frozen=True)
class Target:
    scenario: str
    metric: str
    label: str
    bound: float  # the Leveret/RabbitMQ ratio to reach
    higher_is_better: bool

    def met(self, ratio: float) -> bool:
        return ratio >= self.bound if self.higher_is_better else ratio <= self.bound

    def wording(self) -> str:
        return f"{'≥' if self.higher_is_better else '≤'} {self.bound:g}x"


TARGETS = [
    Target("A", "rate", "end-to-end throughput", 0.8, True),
    Target("B", "rate", "end-to-end throughput", 1.0, True),
    Target("C", "rate", "end-to-end throughput", 1.0, True),
    Target("D", "rss_full_mib", "broker RSS while full", 0.2, False),
    Target("E-transient", "p99_ms", "p99 latency", 1.0, False),
    Target("E-persistent", "p99_ms", "p99 latency", 1.0, False),
]
UNITS = {"rate": "msg/s", "publish_rate": "msg/s", "drain_rate": "msg/s",
         "rss_full_mib": "MiB", "rss_before_mib": "MiB", "p50_ms": "ms", "p99_ms": "ms",
         "p999_ms": "ms", "broker_cpu": "cores", "client_cpu": "cores"}
NAMES = {"rate": "end-to-end throughput", "publish_rate": "publish rate",
         "drain_rate": "drain rate", "rss_full_mib": "broker RSS while full",
         "rss_before_mib": "broker RSS before", "p50_ms": "p50 latency",
         "p99_ms": "p99 latency", "p999_ms": "p99.9 latency", "broker_cpu": "broker CPU",
         "client_cpu": "load generator CPU (all processes)"}


def number(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def spread(stats: dict[str, float]) -> str:
    return f"{number(stats['median'])} ({number(stats['min'])}-{number(stats['max'])})"


def paired_ratios(runs: dict[str, list[dict[str, Any]]], metric: str) -> list[float]:
    """Leveret/RabbitMQ for each repetition (A B measured back to back)."""
    return [mine[metric] / theirs[metric]
            for mine, theirs in zip(runs["leveret"], runs["rabbitmq"], strict=False)
            if theirs.get(metric)]


def bottleneck(target: str, run: dict[str, float], cores: int) -> str:
    """Which side saturates, from the CPU each used (in cores)."""
    broker, clients = run["broker_cpu"], run["client_cpu"]
    if run.get("client_cpu_max", 0) >= 0.85:
        return "load generator (a process at one core)"
    if target == "leveret" and broker >= 0.85:
        return "broker (its event loop thread at one core)"
    if broker + clients >= 0.85 * cores:
        return f"the machine (broker and clients fill its {cores} cores)"
    return "neither (waits: fsync, confirm window, or the offered rate)"


def targets_table(summary: dict[str, Any], runs: dict[str, Any]) -> list[str]:
    lines = ["| scenario | measure | Leveret median (min-max) | RabbitMQ median (min-max) "
             "| Leveret/RabbitMQ (per repetition) | target | met |",
             "|---|---|---|---|---|---|---|"]
    for t in TARGETS:
        if t.scenario not in summary or len(summary[t.scenario]) < 2:
            continue
        mine = summary[t.scenario]["leveret"][t.metric]
        theirs = summary[t.scenario]["rabbitmq"][t.metric]
        ratio = mine["median"] / theirs["median"]
        pairs = paired_ratios(runs[t.scenario], t.metric)
        verdict = "yes" if t.met(ratio) else (
            f"**no**: {abs(ratio / t.bound - 1):.0%} "
            f"{'short' if t.higher_is_better else 'over'}")
        lines.append(
            f"| {t.scenario} | {t.label}, {UNITS[t.metric]} | {spread(mine)} | {spread(theirs)} "
            f"| **{ratio:.2f}** ({', '.join(f'{r:.2f}' for r in pairs)}) | {t.wording()} "
            f"| {verdict} |")
    return lines


def scenario_tables(summary: dict[str, Any], runs: dict[str, Any], cores: int) -> list[str]:
    lines: list[str] = []
    for name, title in SCENARIOS.items():
        if name not in summary:
            continue
        by_target = summary[name]
        lines += ["", f"**{title}**", "", "| | Leveret | RabbitMQ | ratio |", "|---|---|---|---|"]
        for metric in by_target["leveret"]:
            if metric not in NAMES:
                continue
            mine = by_target["leveret"][metric]
            theirs = by_target.get("rabbitmq", {}).get(metric)
            ratio = f"{mine['median'] / theirs['median']:.2f}" if theirs else ""
            lines.append(f"| {NAMES[metric]}, {UNITS[metric]} | {spread(mine)} | "
                         f"{spread(theirs) if theirs else ''} | {ratio} |")
        if "broker_cpu" in by_target["leveret"]:
            sides = [f"{target}: {bottleneck(target, _median_run(runs[name][target]), cores)}"
                     for target in by_target]
            lines += ["", "Saturates: " + "; ".join(sides) + "."]
    return lines


def _median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """The repetition with the median throughput (its CPU figures go with it)."""
    ordered = sorted(runs, key=lambda run: run.get("rate", 0))
    return ordered[len(ordered) // 2]


def curve_tables(summary: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for title, points in CURVES.values():
        names = [n for n in points if n in summary]
        if not names:
            continue
        lines += ["", f"**{title}**", "",
                  "| | Leveret msg/s | RabbitMQ msg/s | ratio | Leveret MiB/s | "
                  "Leveret broker CPU | RabbitMQ broker CPU |", "|---|---|---|---|---|---|---|"]
        for name in names:
            mine = summary[name]["leveret"]
            theirs = summary[name].get("rabbitmq")
            cells = [name.split("-", 1)[1], spread(mine["rate"]), "", "",
                     f"{mine['rate']['median'] * _size(name) / 2**20:.1f}",
                     f"{mine['broker_cpu']['median']:.2f}", ""]
            if theirs:
                cells[2] = spread(theirs["rate"])
                cells[3] = f"{mine['rate']['median'] / theirs['rate']['median']:.2f}"
                cells[6] = f"{theirs['broker_cpu']['median']:.2f}"
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _size(name: str) -> int:
    sizes = {"size-1KiB": 1024, "size-64KiB": 65536, "size-1MiB": 2**20}
    return sizes.get(name, 100)


def profile_tables(profiles: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for profile in profiles:
        measured = profile["measured"]
        lines += ["", f"**Scenario {profile['scenario']}**: {profile['samples']:,} samples of "
                  f"the broker at {measured.get('broker_cpu', 0):.2f} cores, "
                  f"{number(measured.get('rate', measured.get('drain_rate', 0)))} msg/s "
                  f"while profiled (median of {profile.get('reps', 1)} runs).", "",
                  "| self | function | | total | function |", "|---|---|---|---|---|"]
        callers = [entry for entry in profile["total"] if not _is_outer(entry[0])]
        for (name, share), (outer, outer_share) in zip(profile["self"], callers, strict=False):
            lines.append(f"| {share:.1%} | `{name}` | | {outer_share:.1%} | `{outer}` |")
    return lines


def _is_outer(name: str) -> bool:
    """Frames every sample passes through (the interpreter, the CLI, the event loop)."""
    return bool(re.search(r"runpy|__main__|\(leveret/cli\.py\)|asyncio|uvloop|<module>"
                          r"|threading\.py|concurrent/futures", name))


def render(data: dict[str, Any], profiles: list[dict[str, Any]]) -> str:
    info = data["machine"]
    cores = int(info["cores"])
    lines = [
        BEGIN,
        "## Leveret and RabbitMQ side by side",
        "",
        f"Generated by `make bench` on {info['date']}: each scenario ran {data['reps']} times "
        f"against each broker, alternating Leveret, RabbitMQ, Leveret, RabbitMQ; each scaling "
        f"curve point {data['curve_reps']} time(s). Leveret is a fresh `leveret serve "
        "--data-dir` process per run; RabbitMQ is the server already running on "
        "127.0.0.1:5672. Producers and consumers are separate processes of the raw-socket "
        "load generator (`bench/loadgen.py`); every run checked that each message arrived "
        "exactly once (a lost or duplicated message fails the run). CPU is in cores: CPU "
        "seconds of the process over the run's wall time.",
        "",
        "| machine | |", "|---|---|",
        *[f"| {key} | {value} |" for key, value in info.items() if key != "date"],
        "",
        "```sh",
        COMMANDS.format(reps=data["reps"], curve_reps=data["curve_reps"]),
        "```",
        "",
        "### Targets",
        "",
        *targets_table(data["summary"], data["runs"]),
        "",
        "### Scenarios",
        *scenario_tables(data["summary"], data["runs"], cores),
        "",
        "### Scaling curves",
        *curve_tables(data["summary"]),
    ]
    if profiles:
        lines += ["", "### Where Leveret's time goes", "",
                  "py-spy sampling the broker (250 Hz, all threads, idle time left out) during "
                  "three more runs of the scenario: *self* is time in the function itself, *total* "
                  "time with it on the stack (outer frames every sample shares left out).",
                  *profile_tables(profiles)]
    return "\n".join([*lines, END]) + "\n"


def write(doc: Path, section: str) -> None:
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = f"{head}{section}\n{tail}"
    else:
        at = text.find("\n## ")
        text = (f"{text.rstrip()}\n\n{section}" if at < 0
                else f"{text[:at + 1]}{section}\n{text[at + 1:]}")
    doc.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--profiles", type=Path, nargs="*", default=[])
    parser.add_argument("--doc", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args()
    data = json.loads(args.results.read_text())
    profiles = [json.loads(path.read_text()) for path in sorted(args.profiles)]
    write(args.doc, render(data, profiles))
    print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
