"""Vocabulary building and corpus splitting against hand-computed results."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bilm.corpus import (build_vocabulary, count_tokens, split_corpus,
                         vocabulary_from_counts)
from bilm.data import Vocabulary

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def corpus(tmp_path):
    (tmp_path / "a.txt").write_text("the cat sat\nthe dog\n\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("café the cat\n<UNK> zebra dog\n", encoding="utf-8")
    return str(tmp_path / "*.txt")


def test_counts(corpus):
    counts, n_tokens = count_tokens(corpus)
    assert n_tokens == 11
    assert counts == {"the": 3, "cat": 2, "dog": 2, "sat": 1, "café": 1, "<UNK>": 1,
                      "zebra": 1}


def test_order_specials_ties_and_limits(corpus):
    counts, _ = count_tokens(corpus)
    # count desc, ties by code point: cat < dog; café < sat < zebra
    assert vocabulary_from_counts(counts) == [
        "<S>", "</S>", "<UNK>", "the", "cat", "dog", "café", "sat", "zebra"]
    assert vocabulary_from_counts(counts, min_count=2) == [
        "<S>", "</S>", "<UNK>", "the", "cat", "dog"]
    assert vocabulary_from_counts(counts, max_size=5) == ["<S>", "</S>", "<UNK>", "the", "cat"]
    with pytest.raises(ValueError, match="max_size"):
        vocabulary_from_counts(counts, max_size=2)
    with pytest.raises(ValueError, match="min_count"):
        vocabulary_from_counts(counts, min_count=0)


def test_written_vocabulary_loads(corpus, tmp_path):
    vocab_file = str(tmp_path / "vocab.out")
    assert build_vocabulary(corpus, vocab_file) == (9, 11)
    vocab = Vocabulary(vocab_file, validate_file=True)
    assert (vocab.bos, vocab.eos, vocab.unk) == (0, 1, 2)
    assert vocab.word_to_id("café") == 6


def test_no_match_is_named(tmp_path):
    with pytest.raises(ValueError, match="nothing-here"):
        count_tokens(str(tmp_path / "nothing-here*"))


def test_split(tmp_path):
    source = tmp_path / "corpus.txt"
    source.write_text("".join(f"sentence {i}\n" for i in range(100)) + "\n",
                      encoding="utf-8")
    shards, heldout = split_corpus(str(source), str(tmp_path / "out"), 3,
                                   heldout_fraction=0.1, seed=1)
    assert [os.path.basename(p) for p in shards] == [
        "train-00001-of-00003.txt", "train-00002-of-00003.txt", "train-00003-of-00003.txt"]
    lines = [Path(p).read_text(encoding="utf-8").splitlines() for p in shards]
    held = Path(heldout).read_text(encoding="utf-8").splitlines()
    assert len(held) == 10 and [len(x) for x in lines] == [30, 30, 30]
    everything = sorted(held + sum(lines, []))
    assert everything == sorted(f"sentence {i}" for i in range(100))
    again, _ = split_corpus(str(source), str(tmp_path / "again"), 3, 0.1, seed=1)
    assert [Path(p).read_text() for p in again] == [Path(p).read_text() for p in shards]


def test_build_vocab_script(corpus, tmp_path):
    vocab_file = tmp_path / "vocab.out"
    result = subprocess.run([sys.executable, "bin/build_vocab.py", "--train_prefix", corpus,
                             "--vocab_file", str(vocab_file), "--min_count", "2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr
    assert "n_train_tokens: 11" in result.stdout
    assert vocab_file.read_text(encoding="utf-8").split("\n")[:6] == [
        "<S>", "</S>", "<UNK>", "the", "cat", "dog"]


def test_write_lines_leaves_nothing_behind_when_interrupted(tmp_path):
    from bilm.corpus import write_lines

    def lines():
        yield "first"
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        write_lines(lines(), str(tmp_path / "vocab.txt"))
    assert list(tmp_path.iterdir()) == []
    write_lines(["a", "b"], str(tmp_path / "vocab.txt"))
    assert (tmp_path / "vocab.txt").read_text(encoding="utf-8") == "a\nb\n"
