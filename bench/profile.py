"""Where a Leveret broker spends its time in one benchmark scenario: py-spy samples the broker
process while `compare.py` runs the scenario against it, and the samples are summed by
function, self time (the function itself was running) and total time (it was on the stack).

    .venv/bin/python bench/profile.py A --out bench/results/profile-A.json

The scenario runs three times (``--reps``) under one recording. The JSON holds the top
functions; `bench/report.py` puts them in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]*)(?::\d+)?\)$")
ROOT = str(Path(__file__).resolve().parents[1])


def short(frame: str) -> str:
    """``deliver (/x/src/leveret/core/queue.py:120)`` -> ``deliver (leveret/core/queue.py)``."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("/src/", "/site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['function']} ({path})"


def summarize(raw: str, top: int) -> dict[str, Any]:
    """Self and total sample counts per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short(f) for f in stack.split(";")]
        # py-spy starts a stack with the thread's name: not a function.
        if frames and frames[0].startswith(("process ", "thread ")):
            frames = frames[1:]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
    return {
        "samples": samples,
        "self": [(name, n / samples) for name, n in own.most_common(top)],
        "total": [(name, n / samples) for name, n in total.most_common(top * 2)],
    }


def profile(scenario: str, top: int = 15, reps: int = 3) -> dict[str, Any]:
    fn = {**compare.SCENARIOS, **compare.CURVES}[scenario]
    with tempfile.TemporaryDirectory() as tmp, compare.Target("leveret") as target:
        raw = Path(tmp) / "stacks.txt"
        spy = subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(target.pid),
             "--rate", "250", "--format", "raw", "--output", str(raw), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            runs = [fn(target) for _ in range(reps)]
        finally:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        text = raw.read_text() if raw.exists() else ""
    if not text:
        raise RuntimeError("py-spy recorded nothing (is ptrace allowed here?)")
    measured = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    return {"scenario": scenario, "reps": reps, "measured": measured, **summarize(text, top)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", help="a scenario or curve name of compare.py (A, B, ...)")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--reps", type=int, default=3, help="runs of the scenario to sample")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = profile(args.scenario, args.top, args.reps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"{args.scenario}: {result['samples']} samples; "
          + json.dumps({k: round(v, 2) for k, v in result["measured"].items()}))
    for name, share in result["self"]:
        print(f"{share:6.1%}  {name}")


if __name__ == "__main__":
    main()
