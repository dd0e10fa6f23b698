"""Training (bilm/training.py) and the bin scripts, on tiny models.

Corpora: the reference corpus of the original library (`tf1_fixtures`,
skipped when BILM_REFERENCE_DIR is unset) and one generated here. Every model
is small enough to train in a few seconds on two CPU cores.
"""
import collections
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from bilm import checkpoints, training
from bilm.data import (Batcher, BidirectionalLMDataset, InvalidNumberOfCharacters,
                       LMDataset, TokenBatcher)
from bilm.model import BidirectionalLanguageModel
from bilm.options import OptionsError
from bilm.corpus import count_train_tokens
from bilm.training import (average_gradients, clip_grads,
                           dump_weights, load_options_latest_checkpoint, load_vocab,
                           restore_checkpoint, test, train)

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_CHARS = 10

# A tiny corpus with a predictable word order (and a non-ASCII word).
SUBJECTS = ["the cat", "a dog", "the café owner", "my friend"]
VERBS = ["sees", "likes", "eats", "finds"]
OBJECTS = ["the fish", "a ball", "some bread", "the bird"]


def write_generated_corpus(folder: Path, n_sentences: int = 24) -> Path:
    """data.txt (about 150 tokens, one unknown word) and vocab.txt in `folder`."""
    rng = random.Random(0)
    lines = []
    for k in range(n_sentences):
        line = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} ."
        if k == 5:
            line = line.replace("ball", "zeppelin")  # not in the vocabulary
        lines.append(line)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    words = sorted({w for part in SUBJECTS + VERBS + OBJECTS for w in part.split()} | {"."})
    (folder / "vocab.txt").write_text("\n".join(["<S>", "</S>", "<UNK>"] + words) + "\n",
                                      encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    return write_generated_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(params=["generated", "reference"])
def corpus(request, generated) -> Path:
    if request.param == "reference":
        return request.getfixturevalue("tf1_fixtures") / "train"
    return generated


def tiny_options(vocab, corpus_dir: Path, bidirectional: bool, use_chars: bool,
                 **extra) -> dict:
    """The original test configuration: 50 epochs of batch 2 x 10 steps."""
    options = {
        "n_tokens_vocab": vocab.size,
        "n_negative_samples_batch": 16,
        "n_train_tokens": count_train_tokens(str(corpus_dir / "data.txt")),
        "batch_size": 2,
        "unroll_steps": 10,
        "n_epochs": 50,
        "all_clip_norm_val": 1.0,
        "dropout": 0.1,
        "lstm": {"dim": 16, "projection_dim": 8, "n_layers": 2},
        "bidirectional": bidirectional,
    }
    if use_chars:
        options["char_cnn"] = {
            "n_characters": 261,
            "max_characters_per_token": MAX_CHARS,
            "filters": [[1, 8], [2, 8], [3, 16], [4, 32], [5, 64]],
            "activation": "tanh",
            "embedding": {"dim": 4},
            "n_highway": 1,
        }
    options.update(extra)
    return options


def get_data(corpus_dir: Path, bidirectional: bool, use_chars: bool, test_mode=False):
    vocab = load_vocab(str(corpus_dir / "vocab.txt"), MAX_CHARS if use_chars else None)
    prefix = str(corpus_dir / "data.txt")
    if bidirectional:
        return BidirectionalLMDataset(prefix, vocab, test=test_mode), vocab
    return LMDataset(prefix, vocab, test=test_mode, reverse=False), vocab


def train_and_test(tmp_path, corpus_dir, bidirectional, use_chars, **extra) -> float:
    data, vocab = get_data(corpus_dir, bidirectional, use_chars)
    options = tiny_options(vocab, corpus_dir, bidirectional, use_chars, **extra)
    save_dir = str(tmp_path / "save")
    train(options, data, 1, save_dir, save_dir)
    options, ckpt_file = load_options_latest_checkpoint(save_dir)
    data_test, _ = get_data(corpus_dir, bidirectional, use_chars, test_mode=True)
    perplexity = test(options, ckpt_file, data_test, batch_size=1)
    print(f"perplexity {perplexity:.3f}")  # shown with pytest -s
    return perplexity


# ---------------------------------------------------------------------------
# Learning: each configuration predicts its training text better than word
# frequencies can
# ---------------------------------------------------------------------------

def unigram_perplexity(corpus_dir: Path) -> float:
    """Perplexity on data.txt of data.txt's own word frequencies (vocabulary
    words, <UNK> for the rest, one sentence end per line): the best a model
    that learned nothing but frequencies can do."""
    vocab = set((corpus_dir / "vocab.txt").read_text(encoding="utf-8").split())
    counts = collections.Counter()
    for line in (corpus_dir / "data.txt").read_text(encoding="utf-8").splitlines():
        if line.split():
            counts.update(t if t in vocab else "<UNK>" for t in line.split())
            counts["</S>"] += 1
    n = sum(counts.values())
    return math.exp(-sum(c / n * math.log(c / n) for c in counts.values()))


def learned_bound(corpus_dir: Path) -> float:
    """The perplexity a trained model must beat on its training text.

    Generated corpus: 0.7 of its unigram perplexity (15.0 -> 10.5), which a
    model that learns only word frequencies (~15) cannot reach; the runs are
    not seeded (dropout, sampled softmax) and the configurations below reach
    2.4-9.5 (a model whose LSTMs get no input: 15.1). The reference corpus (134 tokens,
    most of them <UNK>) does not take 50 epochs of a tiny model much below
    its unigram perplexity (16.2; measured 12.3-16.6), so it keeps the
    original test's bound, 20, which only rules out a model that did not
    train (about 32, its vocabulary size).
    """
    if corpus_dir.parent.name == "tf1-fixtures":
        return 20.0
    return 0.7 * unigram_perplexity(corpus_dir)


def test_unigram_perplexity_of_the_generated_corpus(generated):
    assert unigram_perplexity(generated) == pytest.approx(15.0, abs=0.05)


def test_train_single_direction_words(tmp_path, corpus):
    assert train_and_test(tmp_path, corpus, False, False) < learned_bound(corpus)


def test_train_bilm_chars(tmp_path, corpus):
    assert train_and_test(tmp_path, corpus, True, True) < learned_bound(corpus)


def test_train_shared_softmax_embedding(tmp_path, corpus):
    perplexity = train_and_test(tmp_path, corpus, True, False,
                                share_embedding_softmax=True)
    assert perplexity < learned_bound(corpus)
    names = {name for name, _ in tf.train.list_variables(str(tmp_path / "save"))}
    assert "lm/embedding" in names and "lm/softmax/b" in names
    assert "lm/softmax/W" not in names


def test_train_skip_connections(tmp_path, corpus):
    lstm = {"dim": 16, "projection_dim": 8, "n_layers": 2, "use_skip_connections": True}
    assert train_and_test(tmp_path, corpus, True, False, lstm=lstm) < learned_bound(corpus)


def test_char_inputs_cannot_share_softmax(tmp_path, generated):
    data, vocab = get_data(generated, True, True)
    options = tiny_options(vocab, generated, True, True, share_embedding_softmax=True)
    with pytest.raises(ValueError, match="share_embedding_softmax requires word inputs"):
        train(options, data, 1, str(tmp_path), str(tmp_path))


# ---------------------------------------------------------------------------
# Variable names, towers, gradients
# ---------------------------------------------------------------------------

def expected_char_bilm_names(n_layers=2):
    names = {"lm/char_embed", "lm/CNN_proj/W_proj", "lm/CNN_proj/b_proj"}
    names |= {f"lm/CNN/{kind}_cnn_{i}" for i in range(5) for kind in ("W", "b")}
    names |= {f"lm/CNN_high_0/{kind}_{gate}" for kind in ("W", "b")
              for gate in ("carry", "transform")}
    for d in range(2):
        for layer in range(n_layers):
            root = f"lm/RNN_{d}/rnn/multi_rnn_cell/cell_{layer}/lstm_cell"
            names |= {f"{root}/kernel", f"{root}/bias", f"{root}/projection/kernel"}
    names |= {"lm/softmax/W", "lm/softmax/b"}
    return names | {f"{n}/Adagrad" for n in names} | {"global_step", "train_perplexity"}


def test_two_towers_on_cpu_share_one_set_of_variables(tmp_path, generated):
    data, vocab = get_data(generated, True, True)
    options = tiny_options(vocab, generated, True, True, n_epochs=1)
    with tf.Graph().as_default():
        training._TrainingGraph(training.validate_training_options(options), n_gpus=2)
        assert len(tf.global_variables()) == 64  # as in the original's test
    train(options, data, 2, str(tmp_path), str(tmp_path))
    stored = dict(tf.train.list_variables(str(tmp_path)))
    assert set(stored) == expected_char_bilm_names()
    assert stored["lm/char_embed"] == [261, 4]
    assert stored["lm/RNN_1/rnn/multi_rnn_cell/cell_1/lstm_cell/kernel"] == [16, 64]


def test_single_layer_unidirectional_names(tmp_path, generated):
    data, vocab = get_data(generated, False, False)
    options = tiny_options(vocab, generated, False, False, n_epochs=1,
                           lstm={"dim": 16, "projection_dim": 8})
    train(options, data, 1, str(tmp_path), str(tmp_path))
    names = {name for name, _ in tf.train.list_variables(str(tmp_path))}
    base = {"lm/embedding", "lm/rnn/lstm_cell/kernel", "lm/rnn/lstm_cell/bias",
            "lm/rnn/lstm_cell/projection/kernel", "lm/softmax/W", "lm/softmax/b"}
    assert names == base | {f"{n}/Adagrad" for n in base} | {"global_step",
                                                               "train_perplexity"}


def test_average_gradients_concatenates_and_deduplicates_sparse():
    with tf.Graph().as_default():
        variable = tf.get_variable("v", [4, 2], initializer=tf.zeros_initializer())
        dense = tf.get_variable("d", [2], initializer=tf.zeros_initializer())
        sparse_0 = tf.IndexedSlices(tf.constant([[1.0, 1.0], [2.0, 2.0]]),
                                    tf.constant([0, 2]), tf.constant([4, 2]))
        sparse_1 = tf.IndexedSlices(tf.constant([[4.0, 4.0], [8.0, 8.0]]),
                                    tf.constant([2, 3]), tf.constant([4, 2]))
        towers = [[(sparse_0, variable), (tf.constant([1.0, 3.0]), dense)],
                  [(sparse_1, variable), (tf.constant([3.0, 5.0]), dense)]]
        (sparse, _), (dense_grad, _) = average_gradients(towers, 2, {})
        assert isinstance(sparse, tf.IndexedSlices)
        clipped, _ = clip_grads([(sparse, variable), (dense_grad, dense)],
                                {"all_clip_norm_val": 1.0}, False, None)
        with tf.Session() as sess:
            indices, values, dense_value, clipped_values = sess.run(
                [sparse.indices, sparse.values, dense_grad,
                 [tf.convert_to_tensor(g) for g, _ in clipped]])
    assert sorted(indices.tolist()) == [0, 2, 3]  # index 2 appears once
    summed = dict(zip(indices.tolist(), values[:, 0].tolist()))
    assert summed == {0: 0.5, 2: 3.0, 3: 4.0}
    np.testing.assert_allclose(dense_value, [2.0, 4.0])
    total_norm = np.sqrt(sum(np.sum(np.square(v)) for v in clipped_values))
    np.testing.assert_allclose(total_norm, 1.0, rtol=1e-5)


# ---------------------------------------------------------------------------
# dump_weights -> BidirectionalLanguageModel round trip
# ---------------------------------------------------------------------------

ROUND_TRIP_SENTENCES = [["the", "cat", "sees", "a", "ball", "."],
                        ["my", "friend", "eats", "unseen-wörd"],
                        ["a"]]


def training_graph_outputs(options, ckpt_file, forward_ids, backward_ids):
    """Token embedding and per-layer LSTM outputs of the is_training=False
    graph for one sentence ([T] word ids or [T, C] char ids, with boundaries)."""
    options = dict(options, batch_size=1, unroll_steps=len(forward_ids))
    with tf.Graph().as_default():
        with tf.variable_scope("lm"):
            model = training.LanguageModel(options, False)
        inputs = ([model.tokens_characters, model.tokens_characters_reverse]
                  if model.char_inputs else [model.token_ids, model.token_ids_reverse])
        with tf.Session() as sess:
            restore_checkpoint(sess, ckpt_file)
            return sess.run([model.embedding, model.lstm_outputs],
                            {inputs[0]: forward_ids[None], inputs[1]: backward_ids[None]})


def round_trip_error(options, ckpt_file, vocab, lm_embeddings, use_chars) -> float:
    error = 0.0
    proj = options["lstm"]["projection_dim"]
    for k, tokens in enumerate(ROUND_TRIP_SENTENCES):
        n = len(tokens)
        if use_chars:  # training ids are unshifted; the backward LM reads reversed text
            forward = vocab.encode_chars(tokens, split=False)
            backward = vocab.encode_chars(tokens[::-1], reverse=True, split=False)
        else:
            forward = vocab.encode(tokens, split=False)
            backward = vocab.encode(tokens[::-1], reverse=True, split=False)
        embedding, (forward_layers, backward_layers) = training_graph_outputs(
            options, ckpt_file, forward, backward)
        pairs = [(lm_embeddings[k, 0, :n, :proj], embedding[0, 1:n + 1])]
        for layer, (fwd, bwd) in enumerate(zip(forward_layers, backward_layers)):
            pairs.append((lm_embeddings[k, layer + 1, :n, :proj], fwd[0, 1:n + 1]))
            # back to input order, then drop the boundaries
            pairs.append((lm_embeddings[k, layer + 1, :n, proj:], bwd[0, ::-1][1:n + 1]))
        error = max(error, max(float(np.max(np.abs(a - b))) for a, b in pairs))
        assert np.all(lm_embeddings[k, 1:, n:] == 0)  # LSTM outputs past the length
    return error


def inference_lm_embeddings(options_file, weight_file, ids, use_chars):
    with tf.Graph().as_default():
        shape = (None, None, MAX_CHARS) if use_chars else (None, None)
        placeholder = tf.placeholder(tf.int64, shape)
        model = BidirectionalLanguageModel(options_file, weight_file,
                                           use_character_inputs=use_chars)
        ops = model(placeholder)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            return sess.run(ops["lm_embeddings"], {placeholder: ids})


@pytest.mark.parametrize("use_chars", [True, False], ids=["chars", "words"])
def test_dump_weights_round_trip(tmp_path, generated, use_chars):
    data, vocab = get_data(generated, True, use_chars)
    lstm = {"dim": 16, "projection_dim": 8, "n_layers": 2, "use_skip_connections": True,
            "cell_clip": 3, "proj_clip": 3}
    options = tiny_options(vocab, generated, True, use_chars, n_epochs=3, lstm=lstm)
    save_dir = tmp_path / "save"
    train(options, data, 1, str(save_dir), str(save_dir))
    weight_file, options_file = str(tmp_path / "weights.hdf5"), str(tmp_path / "options.json")
    dump_weights(str(save_dir), weight_file, options_outfile=options_file)

    with h5py.File(weight_file, "r") as fin:
        names = set()
        fin.visititems(lambda name, obj: names.add(name)
                       if isinstance(obj, h5py.Dataset) else None)
    assert not any("softmax" in name for name in names)
    if use_chars:
        assert json.loads(Path(options_file).read_text())["char_cnn"]["n_characters"] == 262
        with h5py.File(weight_file, "r") as fin:
            assert fin["char_embed"].shape == (261, 4)
        ids = Batcher(str(generated / "vocab.txt"), MAX_CHARS).batch_sentences(
            ROUND_TRIP_SENTENCES)
    else:
        with h5py.File(weight_file, "r") as fin:
            assert fin["embedding"].shape == (vocab.size, 8)
        ids = TokenBatcher(str(generated / "vocab.txt")).batch_sentences(
            ROUND_TRIP_SENTENCES)
    assert "RNN_1/RNN/MultiRNNCell/Cell1/LSTMCell/W_P_0" in names

    lm_embeddings = inference_lm_embeddings(options_file, weight_file, ids, use_chars)
    _, ckpt_file = load_options_latest_checkpoint(str(save_dir))
    error = round_trip_error(options, ckpt_file, vocab, lm_embeddings, use_chars)
    print(f"round-trip max abs error ({'chars' if use_chars else 'words'}): {error:.3g}")
    assert error < 1e-5


def test_dump_weights_optionally_writes_softmax(tmp_path, generated):
    data, vocab = get_data(generated, True, False)
    options = tiny_options(vocab, generated, True, False, n_epochs=1,
                           share_embedding_softmax=True)
    train(options, data, 1, str(tmp_path), str(tmp_path))
    outfile = str(tmp_path / "weights.hdf5")
    dump_weights(str(tmp_path), outfile, include_softmax=True)
    with h5py.File(outfile, "r") as fin:
        assert fin["softmax/b"].shape == (vocab.size,)
        np.testing.assert_array_equal(fin["softmax/W"][...], fin["embedding"][...])
    with pytest.raises(ValueError, match="would overwrite the training options.json"):
        dump_weights(str(tmp_path), outfile, options_outfile=str(tmp_path / "options.json"))


# ---------------------------------------------------------------------------
# Restoring: restart, old TF1 cell names, interrupts, the end of the data
# ---------------------------------------------------------------------------

def test_restart_continues_from_global_step(tmp_path, generated):
    data, vocab = get_data(generated, True, True)
    options = tiny_options(vocab, generated, True, True, n_epochs=1)
    n_batches = int(options["n_train_tokens"] / 20)
    first = train(options, data, 1, str(tmp_path), str(tmp_path))
    assert first.endswith(f"model.ckpt-{n_batches}")
    options, ckpt_file = load_options_latest_checkpoint(str(tmp_path))
    second = train(options, data, 1, str(tmp_path), str(tmp_path), restart_ckpt_file=ckpt_file)
    assert second.endswith(f"model.ckpt-{2 * n_batches}")
    reader = tf.train.load_checkpoint(second)
    assert reader.get_tensor("global_step") == 2 * n_batches
    # the Adagrad accumulators kept growing from their restored values
    before = tf.train.load_checkpoint(first).get_tensor("lm/softmax/b/Adagrad")
    assert np.all(reader.get_tensor("lm/softmax/b/Adagrad") >= before)


def rename_to_tf1_cell_names(ckpt_file: str, out_dir: Path) -> None:
    """Copy a checkpoint with the LSTM variables named as TF < 1.2 did."""
    reader = tf.train.load_checkpoint(ckpt_file)
    with tf.Graph().as_default():
        variables = []
        for name in reader.get_variable_to_shape_map():
            old = checkpoints._old_cell_name(name)
            variables.append(tf.Variable(reader.get_tensor(name), name=old))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver(variables).save(sess, str(out_dir / "model.ckpt"),
                                           global_step=int(reader.get_tensor("global_step")))


def test_checkpoint_with_old_weights_biases_names_restores(tmp_path, generated):
    data, vocab = get_data(generated, True, True)
    options = tiny_options(vocab, generated, True, True, n_epochs=1)
    new_dir, old_dir = tmp_path / "new", tmp_path / "old"
    train(options, data, 1, str(new_dir), str(new_dir))
    old_dir.mkdir()
    (old_dir / "options.json").write_text((new_dir / "options.json").read_text())
    _, ckpt_file = load_options_latest_checkpoint(str(new_dir))
    rename_to_tf1_cell_names(ckpt_file, old_dir)
    old_names = {name for name, _ in tf.train.list_variables(str(old_dir))}
    assert "lm/RNN_0/rnn/multi_rnn_cell/cell_0/lstm_cell/weights" in old_names
    assert "lm/RNN_0/rnn/multi_rnn_cell/cell_0/lstm_cell/biases/Adagrad" in old_names
    assert "lm/RNN_0/rnn/multi_rnn_cell/cell_0/lstm_cell/projection/weights" in old_names

    perplexities = []
    for folder in (new_dir, old_dir):
        test_options, ckpt = load_options_latest_checkpoint(str(folder))
        test_data, _ = get_data(generated, True, True, test_mode=True)
        perplexities.append(test(test_options, ckpt, test_data, batch_size=1))
        dump_weights(str(folder), str(folder / "weights.hdf5"))
    assert perplexities[0] == pytest.approx(perplexities[1], rel=1e-6)
    with h5py.File(new_dir / "weights.hdf5", "r") as new, \
            h5py.File(old_dir / "weights.hdf5", "r") as old:
        name = "RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/W_0"
        np.testing.assert_array_equal(new[name][...], old[name][...])

    # restarting from the old names writes the current names
    options, ckpt = load_options_latest_checkpoint(str(old_dir))
    restarted = train(options, data, 1, str(old_dir), str(old_dir), restart_ckpt_file=ckpt)
    assert "lm/RNN_0/rnn/multi_rnn_cell/cell_0/lstm_cell/kernel" in dict(
        tf.train.list_variables(restarted))


class InterruptingData:
    """Yields the batches of `data`, then raises KeyboardInterrupt (Ctrl-C)."""

    def __init__(self, data, n_batches):
        self.data, self.n_batches = data, n_batches
        self.vocab = data.vocab

    def iter_batches(self, batch_size, num_steps):
        for k, batch in enumerate(self.data.iter_batches(batch_size, num_steps)):
            if k == self.n_batches:
                raise KeyboardInterrupt
            yield batch


def test_keyboard_interrupt_keeps_last_checkpoint(tmp_path, generated, monkeypatch):
    monkeypatch.setattr(training, "CHECKPOINT_EVERY", 3)
    data, vocab = get_data(generated, False, False)
    options = tiny_options(vocab, generated, False, False)
    with pytest.raises(KeyboardInterrupt):
        train(options, InterruptingData(data, 5), 1, str(tmp_path), str(tmp_path))
    options, ckpt_file = load_options_latest_checkpoint(str(tmp_path))
    assert ckpt_file.endswith("model.ckpt-3")
    assert not [name for name in os.listdir(tmp_path) if "temp" in name]
    test_data, _ = get_data(generated, False, False, test_mode=True)
    assert np.isfinite(test(options, ckpt_file, test_data, batch_size=1))


def test_training_stops_cleanly_when_data_runs_out(tmp_path, generated, monkeypatch):
    monkeypatch.setattr(training, "SUMMARY_EVERY", 2)
    monkeypatch.setattr(training, "HISTOGRAM_EVERY", 4)
    data, vocab = get_data(generated, True, True, test_mode=True)  # visits the text once
    options = tiny_options(vocab, generated, True, True)  # asks for 50 epochs
    ckpt_file = train(options, data, 1, str(tmp_path / "save"), str(tmp_path / "log"))
    n_batches = int(tf.train.load_checkpoint(ckpt_file).get_tensor("global_step"))
    assert 4 <= n_batches < 50 * int(options["n_train_tokens"] / 20)
    assert ckpt_file == load_options_latest_checkpoint(str(tmp_path / "save"))[1]

    tags = {}  # tag -> steps written
    for events_file in (tmp_path / "log").glob("events.out.tfevents.*"):
        for event in tf.train.summary_iterator(str(events_file)):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    # the tag is 'train_perplexity_1' (the variable holds the name), as in the original
    perplexity_tag, = [tag for tag, steps in tags.items()
                       if tag.startswith("train_perplexity") and steps[0] == 2]
    assert tags[perplexity_tag][:2] == [2, 4] and tags["norm_grad"][:2] == [2, 4]
    assert "norm_pre_clip/lm/softmax/W_0" in tags
    assert tags["lstm_embedding_1"] == [4 * k for k in range(1, n_batches // 4 + 1)]
    assert "UPDATE/lm/char_embed_0" in tags and "lm/char_embed/Adagrad_0" in tags


# ---------------------------------------------------------------------------
# Bad input: clear errors
# ---------------------------------------------------------------------------

def test_glob_matching_no_file(tmp_path):
    pattern = str(tmp_path / "missing-*.txt")
    with pytest.raises(ValueError, match="no training file matches the pattern"):
        count_train_tokens(pattern)


def test_empty_shard(tmp_path, generated):
    (tmp_path / "a.txt").write_text("one two\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="b.txt contains no tokens"):
        count_train_tokens(str(tmp_path / "*.txt"))
    vocab = load_vocab(str(generated / "vocab.txt"))
    with pytest.raises(ValueError, match="contains no tokens"):
        LMDataset(str(tmp_path / "b.txt"), vocab)


def test_count_train_tokens(generated):
    text = (generated / "data.txt").read_text(encoding="utf-8")
    assert count_train_tokens(str(generated / "data.*")) == len(text.split())


@pytest.mark.parametrize("missing", ["<S>", "</S>", "<UNK>"])
def test_vocabulary_missing_special_token(tmp_path, missing):
    tokens = [t for t in ["<S>", "</S>", "<UNK>", "a", "b"] if t != missing]
    (tmp_path / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    for max_word_length in (None, MAX_CHARS):
        with pytest.raises(ValueError, match=f"lacks the special token.*{missing}"):
            load_vocab(str(tmp_path / "vocab.txt"), max_word_length)


def test_vocabulary_size_must_match_n_tokens_vocab(tmp_path, generated):
    data, vocab = get_data(generated, True, True)
    options = tiny_options(vocab, generated, True, True, n_tokens_vocab=vocab.size + 1)
    with pytest.raises(ValueError, match=rf"has {vocab.size} tokens but options "
                                         rf"'n_tokens_vocab' is {vocab.size + 1}"):
        train(options, data, 1, str(tmp_path), str(tmp_path))


def test_training_needs_261_characters(tmp_path, generated):
    data, vocab = get_data(generated, True, True)
    options = tiny_options(vocab, generated, True, True)
    options["char_cnn"]["n_characters"] = 262
    with pytest.raises(InvalidNumberOfCharacters, match="training needs 261"):
        train(options, data, 1, str(tmp_path), str(tmp_path))


@pytest.mark.parametrize("path", ["n_tokens_vocab", "dropout", "unroll_steps",
                                  "n_negative_samples_batch", "lstm.dim",
                                  "char_cnn.filters"])
def test_options_missing_a_key(tmp_path, generated, path):
    data, vocab = get_data(generated, True, True)
    options = tiny_options(vocab, generated, True, True)
    node = options
    *parents, key = path.split(".")
    for parent in parents:
        node = node[parent]
    del node[key]
    with pytest.raises(OptionsError, match=f"missing required key '{path}'"):
        train(options, data, 1, str(tmp_path), str(tmp_path))
    assert not (tmp_path / "options.json").exists()


def test_too_few_tokens_for_one_batch(tmp_path, generated):
    data, vocab = get_data(generated, False, False)
    options = tiny_options(vocab, generated, False, False, n_train_tokens=19)
    with pytest.raises(ValueError, match="smaller than one batch"):
        train(options, data, 1, str(tmp_path), str(tmp_path))


def test_save_dir_without_checkpoint(tmp_path, generated):
    with pytest.raises(FileNotFoundError, match="no options.json"):
        load_options_latest_checkpoint(str(tmp_path))
    data, vocab = get_data(generated, False, False)
    (tmp_path / "options.json").write_text(
        json.dumps(tiny_options(vocab, generated, False, False)), encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        load_options_latest_checkpoint(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        dump_weights(str(tmp_path), str(tmp_path / "weights.hdf5"))
    with pytest.raises(ValueError, match="no checkpoint given"):
        test(tiny_options(vocab, generated, False, False), None, data)


def test_test_batch_larger_than_the_data(tmp_path, generated):
    data, vocab = get_data(generated, False, False)
    options = tiny_options(vocab, generated, False, False, n_epochs=1)
    ckpt_file = train(options, data, 1, str(tmp_path), str(tmp_path))
    test_data, _ = get_data(generated, False, False, test_mode=True)
    with pytest.raises(ValueError, match="no complete batch of 256 rows"):
        test(options, ckpt_file, test_data)


def test_checkpoint_of_another_model(tmp_path, generated):
    data, vocab = get_data(generated, False, False)
    options = tiny_options(vocab, generated, False, False, n_epochs=1)
    ckpt_file = train(options, data, 1, str(tmp_path), str(tmp_path))
    test_data, _ = get_data(generated, False, False, test_mode=True)
    bigger = dict(options, lstm={"dim": 32, "projection_dim": 8, "n_layers": 2})
    with pytest.raises(ValueError, match="shape mismatch.*cell_0/lstm_cell/kernel"):
        test(bigger, ckpt_file, test_data, batch_size=1)


# ---------------------------------------------------------------------------
# The bin scripts, end to end
# ---------------------------------------------------------------------------

def run_script(name, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, str(REPO_ROOT / "bin" / name), *args],
                            capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def test_bin_scripts_end_to_end(tmp_path, generated):
    vocab_file, prefix = str(generated / "vocab.txt"), str(generated / "data.*")
    save_dir = str(tmp_path / "save")
    vocab = load_vocab(vocab_file, MAX_CHARS)
    options = tiny_options(vocab, generated, True, True)
    for key in ("n_tokens_vocab", "n_train_tokens", "n_epochs", "batch_size"):
        del options[key]  # the script sets these
    options["lstm"]["use_skip_connections"] = True
    options_file = tmp_path / "tiny.json"
    options_file.write_text(json.dumps(options), encoding="utf-8")
    n_tokens = count_train_tokens(prefix)

    log = run_script("train_elmo.py", "--save_dir", save_dir, "--vocab_file", vocab_file,
                     "--train_prefix", prefix, "--options_file", str(options_file),
                     "--n_gpus", "1", "--batch_size", "2", "--n_epochs", "1")
    assert f"counted n_train_tokens = {n_tokens}" in log
    n_batches = int(n_tokens / 20)
    assert f"batch {n_batches}/{n_batches}" in log and "tokens/s" in log and "ETA" in log
    saved = json.loads((tmp_path / "save" / "options.json").read_text())
    assert saved["n_tokens_vocab"] == vocab.size and saved["lstm"]["dim"] == 16

    log = run_script("run_test.py", "--save_dir", save_dir, "--vocab_file", vocab_file,
                     "--test_prefix", prefix, "--batch_size", "1")
    assert "test perplexity of" in log

    run_script("restart.py", "--save_dir", save_dir, "--vocab_file", vocab_file,
               "--train_prefix", prefix, "--n_epochs", "1")
    assert load_options_latest_checkpoint(save_dir)[1].endswith(
        f"model.ckpt-{2 * n_batches}")

    weight_file, inference_options = str(tmp_path / "w.hdf5"), str(tmp_path / "o.json")
    run_script("dump_weights.py", "--save_dir", save_dir, "--outfile", weight_file,
               "--options_outfile", inference_options, "--include_softmax")
    with h5py.File(weight_file, "r") as fin:
        assert fin["char_embed"].shape == (261, 4) and "softmax" in fin
    ids = Batcher(vocab_file, MAX_CHARS).batch_sentences([["the", "cat"]])
    lm_embeddings = inference_lm_embeddings(inference_options, weight_file, ids, True)
    assert lm_embeddings.shape == (1, 3, 2, 16)
