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
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

from service.launch import served_locally
from service.registry import models

ROOT = Path(__file__).resolve().parent.parent
USERS = (*(model.user_class for model in models()), "MixedUser")  # loadtest/locustfile.py
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
           "MAX_USERS": str(args.max_users), "STEP_SECONDS": str(args.step_seconds)}
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


def step_table(history_csv: Path) -> list[dict]:
    """One row per user count from locust's per-second history: steady rate and last-window percentiles."""
    rows = [row for row in csv.DictReader(history_csv.open()) if row["Name"] == "Aggregated"]
    by_users: dict[int, list[dict]] = {}
    for row in rows:
        by_users.setdefault(int(row["User Count"]), []).append(row)
    table = []
    for users, step in sorted(by_users.items()):
        if users == 0:
            continue
        start = int(step[0]["Timestamp"])
        settled = sum(int(r["Timestamp"]) - start >= SETTLE_SECONDS for r in step)
        # Counted from the row before the settled ones (the cumulative count where they begin): on a busy machine
        # locust may write a single settled row, which alone spans no time.
        steady = step[-settled - 1:] if settled else step
        last = steady[-1]
        table.append({
            "users": users,
            "requests_per_s": _rate(steady, "Requests/s", "Total Request Count"),
            "p50_ms": _number(last["50%"]), "p95_ms": _number(last["95%"]), "p99_ms": _number(last["99%"]),
            "failures_per_s": _rate(steady, "Failures/s", "Total Failure Count"),
        })
    return table


def _rate(rows: list[dict], current: str, total: str) -> float:
    """Per-second rate over the rows: from the cumulative count where they span time, since locust's
    rolling "current" rate lags by seconds and reads 0 at the start of a short step on a busy machine."""
    seconds = int(rows[-1]["Timestamp"]) - int(rows[0]["Timestamp"])
    if seconds > 0:
        return round((int(rows[-1][total]) - int(rows[0][total])) / seconds, 2)
    return round(sum(float(row[current]) for row in rows) / len(rows), 2)


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
        print(f"{row['users']:>6} {row['requests_per_s']:>9} {row['p50_ms']:>8} {row['p95_ms']:>8} "
              f"{row['p99_ms']:>8} {row['failures_per_s']:>7}")
    print(f"load generator CPU: {generator_cpu:.0f}% of one core (locust runs on one core)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(served_locally(args.out / "server.log")).url
        status, generator_cpu = run_locust(url, args)
    table = step_table(args.out / "locust_stats_history.csv")
    if not table:
        raise SystemExit("locust recorded no requests; see the output above")
    write_outputs(table, args.out, args.user)
    print_table(table, generator_cpu)
    print(f"wrote {args.out}/: steps.csv, throughput.png, latency.png, report.html, locust_*.csv")
    return status


if __name__ == "__main__":
    sys.exit(main())
