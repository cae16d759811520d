"""A locust load shape that raises users in equal steps, holding each step for a fixed time.

Configured by environment variables (set by loadtest.stepload): STEP_USERS (users added per step),
STEP_SECONDS (how long each step lasts), MAX_USERS (the last step). The run ends after the last step.

With STEP_TICKS_CSV set, every tick (about once a second) appends one row to that file: the wall time, the
users of the step in force (0 once the run is over), and locust's cumulative request and failure counts. Each
step's rate is computed from these counts over the step's own window (loadtest.stepload.step_table): exact
whatever the load on the machine, where locust's rolling "current" rate lags by seconds.
"""

from __future__ import annotations

import csv
import os
import time

from locust import LoadTestShape

TICK_FIELDS = ("time", "users", "requests", "failures")


class StepLoad(LoadTestShape):
    step_users = int(os.environ.get("STEP_USERS", "8"))
    step_seconds = float(os.environ.get("STEP_SECONDS", "10"))
    max_users = int(os.environ.get("MAX_USERS", "64"))
    ticks_csv = os.environ.get("STEP_TICKS_CSV")

    def tick(self) -> tuple[int, float] | None:
        step = int(self.get_run_time() // self.step_seconds) + 1
        users = step * self.step_users
        finished = users > self.max_users
        self.record(0 if finished else users)
        if finished:
            return None
        return users, float(self.step_users)  # spawn a whole step at once

    def record(self, users: int) -> None:
        """One row of cumulative counts at this instant (nothing when STEP_TICKS_CSV is unset)."""
        if not self.ticks_csv or self.runner is None:
            return
        total = self.runner.stats.total
        new_file = not os.path.exists(self.ticks_csv)
        with open(self.ticks_csv, "a", newline="") as out:
            writer = csv.writer(out)
            if new_file:
                writer.writerow(TICK_FIELDS)
            writer.writerow((f"{time.time():.3f}", users, total.num_requests, total.num_failures))
