"""loadtest.stepload.step_table: per-step rates from locust's history, right even where its rolling rate lags."""

import csv

from loadtest.stepload import step_table

FIELDS = ["Timestamp", "User Count", "Name", "Requests/s", "Failures/s", "50%", "95%", "99%",
          "Total Request Count", "Total Failure Count"]


def history(path, rows):
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, FIELDS)
        writer.writeheader()
        for second, users, total, failures in rows:
            # locust's rolling "current" rate reads 0 for the first seconds of a run: the case that misled us
            writer.writerow({"Timestamp": 1000 + second, "User Count": users, "Name": "Aggregated",
                             "Requests/s": 0.0, "Failures/s": 0.0, "50%": 20, "95%": 40, "99%": "N/A",
                             "Total Request Count": total, "Total Failure Count": failures})
    return path


def test_rates_come_from_the_cumulative_counts_after_the_settling_seconds(tmp_path):
    rows = [(0, 0, 0, 0)] + [(s, 2, 10 * s, 0) for s in range(1, 7)] + [(s, 4, 60 + 30 * (s - 6), s - 6)
                                                                      for s in range(7, 13)]
    table = step_table(history(tmp_path / "h.csv", rows))
    assert [row["users"] for row in table] == [2, 4]
    assert table[0]["requests_per_s"] == 10 and table[0]["failures_per_s"] == 0
    assert table[1]["requests_per_s"] == 30 and table[1]["failures_per_s"] == 1
    assert table[0]["p50_ms"] == 20 and table[0]["p99_ms"] is None


def test_a_step_with_one_settled_row_counts_from_the_row_before_it(tmp_path):
    # CI-like history from a loaded box: the 2-user step's rows at +0, +1, +2 s, so one row is past the settling time
    rows = [(0, 0, 0, 0), (2, 2, 0, 0), (3, 2, 56, 0), (4, 2, 151, 0)] + [(s, 4, 151 + 80 * (s - 4), 0) for s in range(5, 9)]
    table = step_table(history(tmp_path / "h.csv", rows))
    assert table[0]["requests_per_s"] == 95 and table[0]["failures_per_s"] == 0
    assert table[1]["requests_per_s"] == 80
