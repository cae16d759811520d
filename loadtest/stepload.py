"""Step-load a model server with locust: users rise in steps; writes CSV, an HTML report and PNG plots.

    python -m loadtest.stepload                            # serves the shipped models on a free loopback port, loads, stops
    python -m loadtest.stepload --url http://127.0.0.1:3000 --user DigitsUser --max-users 64 --step-users 8
    make loadtest USER_CLASS=MixedUser                      # the same through make

Writes into --out (default runs/loadtest/<user>-<time>/): locust's CSVs (locust_stats.csv,
locust_stats_history.csv, locust_failures.csv), report.html, steps.csv (one row per step: users,
requests/s, p50/p95/p99 ms, failures), throughput.png and latency.png, and prints the step table with
the load generator's CPU use (above ~90% of one core, the generator, not the server, is the limit).
Bounded in time: steps x step seconds, plus start-up. Targets loopback unless --url says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

from loadtest.profiles import profiles
from service.operations.launch import served_locally

ROOT = Path(__file__).resolve().parent.parent
USERS = (*(model.user_class for model in profiles()), "MixedUser")  # loadtest/locustfile.py
SETTLE_SECONDS = 2.0  # the first seconds of each step (users still connecting) are left out of its rate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="server to load (default: start the shipped models on a free loopback port)")
    parser.add_argument("--user", choices=USERS, default="DigitsUser", help="locust user class (scenario)")
    parser.add_argument("--step-users", type=int, default=8, help="users added at each step")
    parser.add_argument("--max-users", type=int, default=64, help="users at the last step")
    parser.add_argument("--step-seconds", type=float, default=15.0, help="duration of each step")
    parser.add_argument("--out", type=Path, help="output directory (default runs/loadtest/<user>-<time>)")
    args = parser.parse_args(argv)
    if args.step_users < 1 or args.max_users < args.step_users or args.step_seconds < 3:
        parser.error("need step-users >= 1, max-users >= step-users and step-seconds >= 3")
    args.out = args.out or ROOT / "runs" / "loadtest" / f"{args.user}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    return args


def run_locust(url: str, args: argparse.Namespace) -> tuple[int, float]:
    """Run the step-load; returns (locust's exit status, the generator's mean CPU use in % of one core)."""
    steps = args.max_users // args.step_users
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STEP_USERS": str(args.step_users),
           "MAX_USERS": str(args.max_users), "STEP_SECONDS": str(args.step_seconds),
           "STEP_TICKS_CSV": str(args.out / "ticks.csv")}
    command = [sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py,loadtest/stepshape.py", "--headless",
               "--host", url, "--csv", str(args.out / "locust"), "--csv-full-history",
               "--html", str(args.out / "report.html"), "--loglevel", "WARNING", "--only-summary", args.user]
    print(f"step-load {args.user} on {url}: {steps} steps of {args.step_users} users, {args.step_seconds:.0f} s each")
    locust = subprocess.Popen(command, cwd=ROOT, env=env)
    generator, samples = psutil.Process(locust.pid), []
    deadline = time.monotonic() + steps * args.step_seconds + 90
    while locust.poll() is None:
        if time.monotonic() > deadline:
            locust.kill()
            raise SystemExit("locust ran past its time bound; stopped")
        with contextlib.suppress(psutil.NoSuchProcess):
            samples.append(generator.cpu_percent(interval=1.0))
    busy = samples[1:] or [0.0]  # the first sample covers start-up
    return locust.returncode, sum(busy) / len(busy)


def step_table(ticks_csv: Path, history_csv: Path) -> list[dict]:
    """One row per step: its rate from the cumulative counts over its own window, percentiles from locust's history.

    A step's window runs from its first tick past the settling seconds (users still connecting before that) to
    the tick that starts the next step (or ends the run). The counts are locust's own cumulative totals with the
    time they were read, so a busy machine that delays ticks shortens a window but never empties it: a step that
    answered requests never reports 0, where locust's rolling rate lags by seconds and may read 0.
    """
    ticks = [{"time": float(row["time"]), "users": int(row["users"]), "requests": int(row["requests"]),
              "failures": int(row["failures"])} for row in csv.DictReader(ticks_csv.open())]
    percentiles = last_percentiles(history_csv)
    table = []
    for users, window in step_windows(ticks):
        table.append({
            "users": users,
            "requests_per_s": _rate(window, "requests"),
            **percentiles.get(users, {"p50_ms": None, "p95_ms": None, "p99_ms": None}),
            "failures_per_s": _rate(window, "failures"),
        })
    return table


def step_windows(ticks: list[dict]) -> list[tuple[int, tuple[dict, dict]]]:
    """(users, (first tick of the measured window, the tick that ends the step)) for every step, in order."""
    runs = [(users, list(run)) for users, run in itertools.groupby(ticks, key=lambda tick: tick["users"])]
    windows = []
    for index, (users, step) in enumerate(runs):
        if not users:
            continue
        first = step[0]
        end = runs[index + 1][1][0] if index + 1 < len(runs) else step[-1]  # the tick that changed the users
        settled = [tick for tick in step if tick["time"] - first["time"] >= SETTLE_SECONDS]
        start = settled[0] if settled and settled[0] is not end else first
        if end["requests"] == start["requests"] and end["requests"] > first["requests"]:
            start = first  # every answer of the step came while users were connecting: count the whole step
        if end["time"] > start["time"]:
            windows.append((users, (start, end)))
    return windows


def _rate(window: tuple[dict, dict], count: str) -> float:
    start, end = window
    return round((end[count] - start[count]) / (end["time"] - start["time"]), 2)


def last_percentiles(history_csv: Path) -> dict[int, dict]:
    """p50/p95/p99 (ms) of the last row locust wrote for each user count (its rolling window), by users."""
    found = {}
    for row in csv.DictReader(history_csv.open()):
        if row["Name"] == "Aggregated" and int(row["User Count"]):
            found[int(row["User Count"])] = {"p50_ms": _number(row["50%"]), "p95_ms": _number(row["95%"]),
                                             "p99_ms": _number(row["99%"])}
    return found


def _number(value: str) -> float | None:
    return None if value in ("", "N/A") else float(value)


def write_outputs(table: list[dict], out: Path, title: str) -> None:
    """steps.csv, throughput.png and latency.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with (out / "steps.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    users = [row["users"] for row in table]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(users, [row["requests_per_s"] for row in table], marker="o")
    axis.set(xlabel="concurrent users", ylabel="requests/s", title=f"{title}: throughput")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out / "throughput.png", dpi=100)
    figure, axis = plt.subplots(figsize=(6, 4))
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        axis.plot(users, [row[key] for row in table], marker="o", label=key.replace("_ms", ""))
    axis.set(xlabel="concurrent users", ylabel="latency (ms)", title=f"{title}: latency")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "latency.png", dpi=100)
    plt.close("all")


def print_table(table: list[dict], generator_cpu: float) -> None:
    print(f"{'users':>6} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'fail/s':>7}")
    for row in table:
        # a step whose rolling window held no answer has no percentiles (locust writes N/A): shown as "-"
        p50, p95, p99 = ("-" if row[key] is None else row[key] for key in ("p50_ms", "p95_ms", "p99_ms"))
        print(f"{row['users']:>6} {row['requests_per_s']:>9} {p50:>8} {p95:>8} {p99:>8} {row['failures_per_s']:>7}")
    print(f"load generator CPU: {generator_cpu:.0f}% of one core (locust runs on one core)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(served_locally(args.out / "server.log")).url
        status, generator_cpu = run_locust(url, args)
    table = step_table(args.out / "ticks.csv", args.out / "locust_stats_history.csv")
    if not table:
        raise SystemExit("locust recorded no requests; see the output above")
    write_outputs(table, args.out, args.user)
    print_table(table, generator_cpu)
    print(f"wrote {args.out}/: steps.csv, throughput.png, latency.png, report.html, locust_*.csv")
    return status


if __name__ == "__main__":
    sys.exit(main())
