"""The scripts that build and measure the bundled model (scripts/), on small
hand-made inputs: the GCIDE corpus extraction, the WordNet sense test and the
resume arithmetic of scripts/train_default_model.sh."""
import gzip
import os
import subprocess
import sys

import numpy as np
import pytest

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")
sys.path.insert(0, SCRIPTS)

import gcide_corpus  # noqa: E402
import sense_test  # noqa: E402

# Two entries in the dictd text layout of Debian's dict-gcide (shortened).
GCIDE_TEXT = """
00-database-short
   The Collaborative International Dictionary of English v.0.48

A \\A\\ ([.a]), n.
   The first letter of the English alphabet.
   [1913 Webster]

Bank \\Bank\\ (b[a^][ng]k), n. [OE. banke; akin to E. bench [cf. Icel.
   bakki]. See {Bench}.]
   1. The margin of a watercourse; the rising ground bordering a
      lake, river, or sea. [Obs.]
      [1913 Webster]

            Tiber trembled underneath her banks.  --Shak.
      [1913 Webster]

   2. (Law) The bench upon which the judges sit. A["e]rial banks
      of cloud. -- Bank"er, n.
      [1913 Webster]

   Syn: Shore; margin; brink.

   Usage: A bank is higher than a shore.
"""


def test_gcide_paragraph_prose_keeps_only_running_text():
    blocks = list(gcide_corpus.paragraphs(GCIDE_TEXT))
    prose = [gcide_corpus.paragraph_prose(block) for block in blocks]
    assert prose[2] == ("The margin of a watercourse; the rising ground bordering "
                        "a lake, river, or sea.")
    assert prose[3] == "Tiber trembled underneath her banks."          # author dropped
    assert prose[4] == "The bench upon which the judges sit. Aerial banks of cloud."
    assert prose[5] == ""                                               # synonym list
    assert prose[6] == "A bank is higher than a shore."


def test_gcide_corpus_file(tmp_path):
    dict_file = tmp_path / "gcide.dict.dz"
    with gzip.open(dict_file, "wt", encoding="utf-8") as fout:
        fout.write(GCIDE_TEXT)
    out = tmp_path / "corpus.txt"
    gcide_corpus.main(str(dict_file), str(out))
    assert out.read_text(encoding="utf-8").splitlines() == [
        "The first letter of the English alphabet .",
        "The margin of a watercourse ; the rising ground bordering a lake , river , or sea .",
        "Tiber trembled underneath her banks .",
        "The bench upon which the judges sit .",
        "Aerial banks of cloud .",
        "A bank is higher than a shore .",
    ]


def test_gcide_corpus_refuses_another_file(tmp_path):
    dict_file = tmp_path / "other.dz"
    with gzip.open(dict_file, "wt", encoding="utf-8") as fout:
        fout.write("\nsome \\other\\ text\n")
    with pytest.raises(SystemExit, match="other.dz: no entry"):
        gcide_corpus.main(str(dict_file), str(tmp_path / "out.txt"))


# Three synsets of "bank" and one of "shore" in WordNet's data file layout.
WORDNET_NOUNS = """  1 This software and database is being provided under the WordNet license
09213565 17 n 02 bank 0 side 1 000 | sloping land; "they sat on the bank of the river"; "the river bank"
08420278 14 n 02 bank 0 depository_financial_institution 0 000 | a financial institution; "he cashed a check at the bank"; "that bank holds the mortgage"; "a bank loan"
09433442 17 n 01 shore 0 000 | the land along the edge of water; "the boat reached the shore"
04139859 06 n 01 savings_bank 0 000 | a container; "the coins went into the savings bank"
"""


@pytest.fixture
def wordnet_dir(tmp_path):
    for pos in ("noun", "verb", "adj", "adv"):
        (tmp_path / f"data.{pos}").write_text(WORDNET_NOUNS if pos == "noun" else "",
                                              encoding="latin-1")
    return str(tmp_path)


def test_sense_occurrences_and_queries(wordnet_dir):
    found = sense_test.occurrences(wordnet_dir)
    # one-word lemmas only ("savings_bank" is not "bank"), each example once
    assert [(o.lemma, o.sense, " ".join(o.tokens), o.position) for o in found] == [
        ("bank", "noun:09213565", "they sat on the bank of the river", 4),
        ("bank", "noun:09213565", "the river bank", 2),
        ("bank", "noun:08420278", "he cashed a check at the bank", 6),
        ("bank", "noun:08420278", "that bank holds the mortgage", 1),
        ("bank", "noun:08420278", "a bank loan", 1),
        ("shore", "noun:09433442", "the boat reached the shore", 4),
    ]
    heldout = {"the river bank", "that bank holds the mortgage", "the boat reached the shore"}
    queries, references = sense_test.split_queries(found, heldout, trained={"the river bank"})
    # "the river bank" also occurs in training text; "shore" has one sense
    assert [" ".join(o.tokens) for o in queries] == ["that bank holds the mortgage"]
    assert len(references) == 3 and all(o.lemma == "bank" for o in references)


def _occurrence(lemma, sense):
    return sense_test.Occurrence(lemma, sense, (lemma,), 0)


def test_sense_scores_on_known_vectors():
    # layers 0 and 2 identical for all (ties go to the first sense, "a"); layer 1
    # separates the senses
    senses = ["a", "a", "a", "b", "b"]
    found = [_occurrence("w", s) for s in senses]
    a, b = np.array([1.0, 0.1]), np.array([0.1, 1.0])
    vectors = np.stack([np.stack([np.ones(2), a if s == "a" else b, np.ones(2)])
                        for s in senses])                       # [5, 3, 2]
    counted, scores, most_frequent = sense_test.leave_one_out_accuracy(found, vectors)
    assert counted == 5
    assert scores[1] == 1.0 and scores[2] == pytest.approx(3 / 5)
    assert most_frequent == pytest.approx(3 / 5)   # others' majority: a, a, a, a, a
    queries = [_occurrence("w", "b")]
    accuracy = sense_test.nearest_centroid_accuracy(queries, vectors[3:4], found[:3] + found[4:],
                                                    np.concatenate([vectors[:3], vectors[4:]]))
    assert accuracy[1:] == [1.0, 0.0]
    assert sense_test.most_frequent_sense_accuracy(queries, found) == 0.0


def test_remaining_batches_of_a_checkpoint(tmp_path):
    import tensorflow.compat.v1 as tf
    with tf.Graph().as_default():
        step = tf.train.get_or_create_global_step()
        with tf.Session() as sess:
            sess.run(tf.assign(step, 7))
            tf.train.Saver().save(sess, str(tmp_path / "model.ckpt"), global_step=step)
    (tmp_path / "train-1.txt").write_text("a b c d e\nf g h i j\n" * 10)   # 100 tokens

    def remaining(n_epochs):
        result = subprocess.run(
            [sys.executable, os.path.join(SCRIPTS, "remaining_batches.py"), str(tmp_path),
             str(tmp_path / "train-*"), "--n_epochs", str(n_epochs),
             "--tokens_per_batch", "30"], capture_output=True, text=True, check=True)
        return int(result.stdout)
    assert remaining(3) == 2        # 3 batches an epoch (100 // 30), 9 in all, 7 done
    assert remaining(2) == 0        # the run is already past its end


def test_restyle_as_gloss_or_prose():
    import wordnet_corpus
    restyle = wordnet_corpus.restyle
    assert restyle(["The", "bank", "of", "a", "river", "."], prose=False) == \
        ["the", "bank", "of", "a", "river"]
    assert restyle(["the", "bank", "of", "a", "river"], prose=True) == \
        ["The", "bank", "of", "a", "river", "."]
    assert restyle(["NASA", "launched", "it", "."], prose=False) == ["NASA", "launched", "it"]
    assert restyle(["Why", "not", "?"], prose=True) == ["Why", "not", "?"]
    assert restyle(["Go", "away", "."], prose=False) == ["go", "away", "."]  # keeps 3 tokens


def test_mixed_style_corpus_is_seeded_and_mixed(tmp_path):
    import wordnet_corpus
    sentences = [f"The word number {k} is here." for k in range(200)]
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    wordnet_corpus.write_sentences(sentences, str(first), mixed_style_seed=0)
    wordnet_corpus.write_sentences(sentences, str(second), mixed_style_seed=0)
    lines = first.read_text(encoding="utf-8").splitlines()
    assert lines == second.read_text(encoding="utf-8").splitlines()
    prose = [line for line in lines if line.startswith("The ") and line.endswith(" .")]
    gloss = [line for line in lines if line.startswith("the ") and not line.endswith(".")]
    assert len(prose) + len(gloss) == 200 and 70 < len(prose) < 130
