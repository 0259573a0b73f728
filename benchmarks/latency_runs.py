"""The latency benchmark several times in a row, and the median of each ratio to MediaPipe.

    python -m benchmarks.latency_runs [--runs 3] [-- --backends onnxruntime openvino]

One run of `benchmarks.latency` moves by a few percent with the machine's state (one run of the
2-thread rows spread 0.41-0.54 over three runs), so the README's figures are medians of three runs
in a row on an otherwise idle machine. Each run is its own process (the same as a user's); the
arguments after `--` go to every run. Writes `benchmarks/results/latency_runs.json` (per ratio:
each run's value and their median; the load average around each run); `latency.json` is the last
run's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from benchmarks.common import RESULTS_DIR, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("latency_args", nargs="*", help="after --: arguments of benchmarks.latency")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    goals, dates, loads = [], [], []
    for k in range(args.runs):
        print(f"--- run {k + 1} of {args.runs}", flush=True)
        subprocess.run([sys.executable, "-m", "benchmarks.latency", *args.latency_args], check=True)
        run = json.loads((RESULTS_DIR / "latency.json").read_text())
        goals.append(run["goals"])
        dates.append(run["date"])
        loads.append(run["load_average"])
    keys = [k for k in goals[-1] if k.endswith("ratio_to_mediapipe") and all(k in g for g in goals)]
    ratios = {k: {"runs": [g[k] for g in goals], "median": round(statistics.median(g[k] for g in goals), 3)}
              for k in keys}
    print(f"\n{'ratio to MediaPipe (time per frame)':60s} {'runs':>24s} {'median':>7s}")
    for k, r in ratios.items():
        print(f"{k:60s} {' '.join(f'{v:.3f}' for v in r['runs']):>24s} {r['median']:7.3f}")
    write_results("latency_runs", {
        "what": f"{args.runs} runs of `python -m benchmarks.latency {' '.join(args.latency_args)}`".rstrip()
                + " in a row; per ratio each run's value and their median (latency.json is the last run)",
        "dates": dates, "load_average": loads, "ratios": ratios})


if __name__ == "__main__":
    main()
