"""A locust load shape that raises users in equal steps, holding each step for a fixed time.

Configured by environment variables (set by loadtest.stepload): STEP_USERS (users added per step),
STEP_SECONDS (how long each step lasts), MAX_USERS (the last step). The run ends after the last step.
"""

from __future__ import annotations

import os

from locust import LoadTestShape


class StepLoad(LoadTestShape):
    step_users = int(os.environ.get("STEP_USERS", "8"))
    step_seconds = float(os.environ.get("STEP_SECONDS", "10"))
    max_users = int(os.environ.get("MAX_USERS", "64"))

    def tick(self) -> tuple[int, float] | None:
        step = int(self.get_run_time() // self.step_seconds) + 1
        users = step * self.step_users
        if users > self.max_users:
            return None
        return users, float(self.step_users)  # spawn a whole step at once
