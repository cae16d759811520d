"""loadtest.stepload.step_table: per-step rates from locust's cumulative counts over each step's own window."""

import csv
from pathlib import Path

import pytest

from loadtest.stepload import print_table, step_table

# Recorded by `python -m loadtest.stepload --user MixedUser --step-users 2 --max-users 4 --step-seconds 4` beside
# `stress-ng --cpu 2` on the 2-core build machine: the first tick of the run came 3.5 s late and locust's rolling
# rate read 0.0, 1.0, 0.67, 3.0 while the server answered 40-110 requests a second.
LOADED = Path(__file__).parent / "data" / "stepload-loaded"
HISTORY_FIELDS = ["Timestamp", "User Count", "Name", "Requests/s", "Failures/s", "50%", "95%", "99%",
                  "Total Request Count", "Total Failure Count"]


def write(folder: Path, ticks: list[tuple], history: list[tuple]) -> tuple[Path, Path]:
    with (folder / "ticks.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(("time", "users", "requests", "failures"))
        writer.writerows(ticks)
    with (folder / "history.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, HISTORY_FIELDS)
        writer.writeheader()
        for second, users, p50 in history:
            # locust's rolling "current" rate reads 0 at the start of a run: it must never be what is reported
            writer.writerow({"Timestamp": second, "User Count": users, "Name": "Aggregated", "Requests/s": 0.0,
                             "Failures/s": 0.0, "50%": p50, "95%": 40, "99%": "N/A", "Total Request Count": 0,
                             "Total Failure Count": 0})
    return folder / "ticks.csv", folder / "history.csv"


def test_the_loaded_run_reports_each_steps_rate_from_its_counts():
    table = step_table(LOADED / "ticks.csv", LOADED / "locust_stats_history.csv")
    assert [row["users"] for row in table] == [2, 4]
    # 2 users: from the tick 2 s into the step (2 requests) to the tick that started 4 users (46), 1.01 s later
    assert table[0]["requests_per_s"] == pytest.approx(44 / 1.010, abs=0.01)
    # 4 users: from 2 s into the step (205) to the end of the run (423), 2.006 s later
    assert table[1]["requests_per_s"] == pytest.approx(218 / 2.006, abs=0.01)
    assert all(row["failures_per_s"] == 0 for row in table)
    assert table[1]["p50_ms"] == 14 and table[1]["p99_ms"] == 440


def test_rates_count_from_the_first_tick_past_the_settling_seconds(tmp_path):
    ticks = [(100 + s, 2, 10 * s, 0) for s in range(6)] + [(106 + s, 4, 60 + 30 * s, s) for s in range(6)]
    ticks.append((112, 0, 240, 6))
    table = step_table(*write(tmp_path, ticks, [(101, 2, 20), (107, 4, 25)]))
    assert [(row["users"], row["requests_per_s"], row["failures_per_s"]) for row in table] == [(2, 10, 0), (4, 30, 1)]
    assert table[0]["p50_ms"] == 20 and table[1]["p99_ms"] is None


def test_a_step_whose_answers_all_came_while_connecting_is_not_reported_as_zero(tmp_path):
    # a starved generator: one tick during the step, then none until the next step's
    ticks = [(100.0, 2, 0, 0), (100.5, 2, 30, 0), (103.0, 4, 30, 0), (104.0, 4, 90, 0), (106.5, 0, 240, 0)]
    table = step_table(*write(tmp_path, ticks, [(100, 2, 20), (104, 4, 25)]))
    assert table[0]["requests_per_s"] == 10.0  # 30 answers over the whole 3-second step
    assert table[1]["requests_per_s"] == pytest.approx(150 / 2.5)


def test_a_step_with_no_history_row_still_has_its_rate(tmp_path):
    ticks = [(100.0, 2, 0, 0), (104.0, 4, 40, 0), (108.0, 0, 120, 0)]
    table = step_table(*write(tmp_path, ticks, [(105, 4, 25)]))
    assert [row["requests_per_s"] for row in table] == [10.0, 20.0]
    assert table[0]["p50_ms"] is None



def test_a_step_without_percentiles_prints_a_dash(capsys):
    """Locust writes N/A percentiles for a step whose rolling window held no answer (one slow request can do it)."""
    print_table([{"users": 2, "requests_per_s": 3.5, "p50_ms": None, "p95_ms": None, "p99_ms": None,
                  "failures_per_s": 0.0}], generator_cpu=12.0)
    assert capsys.readouterr().out.splitlines()[1].split() == ["2", "3.5", "-", "-", "-", "0.0"]
