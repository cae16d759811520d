"""Soak test: the mixed locust user at about half the sustainable rate for a long time against one server.

    python -m loadtest.soak                       # serves the shipped models on a free loopback port, 10 minutes
    python -m loadtest.soak --minutes 3 --url http://127.0.0.1:3000 --server-pid 1234
    make soak

First measures the sustainable rate (closed loop, --probe-users users, --probe-seconds), then offers half of it
at a constant rate for --minutes. Prints, per minute: requests, p50 and p99 latency, errors, and the server's
RSS; at the end RSS after the first (warm-up) minute and at the end, p99 drift and the error count. Writes
runs/soak/<time>/minutes.csv. Targets loopback unless --url says otherwise; bounded by --minutes.
"""

from __future__ import annotations

# locust (gevent) patches the standard library when imported: first, before anything opens a socket.
from locust import constant_throughput  # isort: skip
from locust.env import Environment  # isort: skip

import argparse
import contextlib
import csv
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import gevent
import numpy as np
import psutil

from loadtest.locustfile import MixedUser
from service.operations.launch import ROOT, served_locally

WARM_UP_MINUTES = 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="server to soak (default: start the shipped models on a free loopback port)")
    parser.add_argument("--server-pid", type=int, help="with --url: the server's PID, to report its RSS")
    parser.add_argument("--minutes", type=float, default=10.0, help="soak duration")
    parser.add_argument("--load-fraction", type=float, default=0.5, help="fraction of the sustainable rate offered")
    parser.add_argument("--users", type=int, default=16, help="simulated users sharing the offered rate")
    parser.add_argument("--probe-users", type=int, default=16, help="closed-loop users measuring the sustainable rate")
    parser.add_argument("--probe-seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, help="output directory (default runs/soak/<time>)")
    args = parser.parse_args(argv)
    if not 0 < args.load_fraction <= 1 or args.minutes <= 0 or args.minutes > 24 * 60:
        parser.error("need 0 < load-fraction <= 1 and 0 < minutes <= 1440")
    args.out = args.out or ROOT / "runs" / "soak" / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    return args


class Recorder:
    """Latencies and errors of every request, bucketed by the minute they finished in."""

    def __init__(self, minutes: float) -> None:
        self.started = time.monotonic()
        self.last_minute = max(0, math.ceil(minutes) - 1)
        self.minutes: dict[int, dict] = {}

    def minute(self) -> int:
        """The current minute of the soak; requests still in flight at the end count in the last one."""
        return min(int((time.monotonic() - self.started) // 60), self.last_minute)

    def on_request(self, response_time: float, exception: Exception | None, **_) -> None:
        bucket = self.minutes.setdefault(self.minute(), {"latencies": [], "errors": 0})
        bucket["latencies"].append(response_time)
        bucket["errors"] += exception is not None


def run_users(url: str, user_class: type, users: int, seconds: float, recorder: Recorder | None = None,
              sampler=None) -> int:
    """Run `users` locust users for `seconds`; returns how many requests finished. `sampler()` runs every 5 s."""
    environment = Environment(user_classes=[user_class], host=url)
    done = []
    environment.events.request.add_listener(lambda **event: done.append(1))
    if recorder is not None:
        environment.events.request.add_listener(recorder.on_request)
    runner = environment.create_local_runner()
    runner.start(users, spawn_rate=users)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        gevent.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        if sampler is not None:
            sampler()
    runner.quit()
    return len(done)


def soak_user(rate_per_user: float) -> type:
    """MixedUser at a constant rate per user (an open-ish loop: users wait out the rest of each period)."""
    return type("SoakUser", (MixedUser,), {"wait_time": constant_throughput(rate_per_user), "abstract": False})


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    with contextlib.suppress(psutil.NoSuchProcess):
        parent = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)]) / 2**20
    return None


def minute_rows(recorder: Recorder, rss_by_minute: dict[int, float | None], seconds: float) -> list[dict]:
    """One row per minute of the soak (the last one may be shorter)."""
    rows = []
    for minute, bucket in sorted(recorder.minutes.items()):
        latencies = np.array(bucket["latencies"])
        span = max(1.0, min(60.0, seconds - 60 * minute))
        rows.append({"minute": minute + 1, "requests": len(latencies), "requests_per_s": round(len(latencies) / span, 1),
                     "p50_ms": round(float(np.percentile(latencies, 50)), 1),
                     "p99_ms": round(float(np.percentile(latencies, 99)), 1),
                     "errors": bucket["errors"], "rss_mb": rss_by_minute.get(minute)})
    return rows


def soak(url: str, pid: int | None, args: argparse.Namespace) -> list[dict]:
    probe = soak_user(1000.0)  # effectively closed loop
    sustainable = run_users(url, probe, args.probe_users, args.probe_seconds) / args.probe_seconds
    offered = args.load_fraction * sustainable
    print(f"sustainable {sustainable:.1f} req/s (mixed user, {args.probe_users} users closed loop); "
          f"offering {offered:.1f} req/s for {args.minutes:g} min")
    recorder, rss_by_minute = Recorder(args.minutes), {}

    def sample() -> None:
        minute = recorder.minute()
        if minute > 0 and minute - 1 in rss_by_minute and minute not in rss_by_minute:  # progress, once a minute
            finished = recorder.minutes.get(minute - 1, {"latencies": [], "errors": 0})
            print(f"minute {minute} of {args.minutes:g}: {len(finished['latencies'])} requests, "
                  f"{finished['errors']} errors, RSS {rss_by_minute[minute - 1] or 0:.1f} MB", flush=True)
        rss_by_minute[minute] = rss_mb(pid)  # the last sample of each minute

    run_users(url, soak_user(offered / args.users), args.users, args.minutes * 60, recorder, sample)
    return minute_rows(recorder, rss_by_minute, args.minutes * 60)


def report(rows: list[dict], out: Path) -> dict:
    with (out / "minutes.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"{'minute':>6} {'requests':>9} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'RSS MB':>8}")
    for row in rows:
        rss = f"{row['rss_mb']:.1f}" if row["rss_mb"] is not None else "-"
        print(f"{row['minute']:>6} {row['requests']:>9} {row['requests_per_s']:>7} {row['p50_ms']:>8} "
              f"{row['p99_ms']:>8} {row['errors']:>7} {rss:>8}")
    settled = rows[WARM_UP_MINUTES:] or rows
    summary = {"errors": sum(row["errors"] for row in rows),
               "p99_ms_first_last": (settled[0]["p99_ms"], settled[-1]["p99_ms"])}
    if settled[0]["rss_mb"] and settled[-1]["rss_mb"]:
        start, end = settled[0]["rss_mb"], settled[-1]["rss_mb"]
        summary.update(rss_mb_after_warm_up=round(start, 1), rss_mb_end=round(end, 1),
                       rss_growth_pct=round(100 * (end - start) / start, 2))
    print("soak:", ", ".join(f"{key} {value}" for key, value in summary.items()))
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if args.url:
            url, pid = args.url, args.server_pid
        else:
            server = stack.enter_context(served_locally(args.out / "server.log"))
            url, pid = server.url, server.process.pid
        rows = soak(url, pid, args)
    summary = report(rows, args.out)
    print(f"wrote {args.out / 'minutes.csv'}")
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
