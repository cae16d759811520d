"""loadtest.sentiment_speed on the shipped model: every model gets a figure in every round."""

from pathlib import Path

from loadtest.sentiment_speed import compare

SHIPPED = Path(__file__).resolve().parents[2] / "artifacts" / "sentiment"


def test_models_take_turns_and_each_round_has_a_rate(tmp_path):
    (tmp_path / "again").symlink_to(SHIPPED)
    rates = compare([SHIPPED, tmp_path / "again"], rounds=2, count=5, threads=1)
    assert list(rates) == [str(SHIPPED), str(tmp_path / "again")]
    assert all(len(r) == 2 and min(r) > 0 for r in rates.values())
