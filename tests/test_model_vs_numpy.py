"""BidirectionalLanguageModel (TF graph) against the NumPy biLM on configurations
the TF1 fixtures do not cover.

tests/numpy_bilm.py is checked against the original TF1 outputs in
test_numpy_reference.py; here it is the reference for skip connections, tanh,
no highway, no CNN projection, 1 and 3 layers, no clipping, projection_dim ==
dim, token input, every batch size up to max_batch_size and sentences of 1 to
40 tokens, run batch after batch so the LSTM states carry over.

Max abs errors measured (TF float32 vs NumPy float64, all outputs, all
batches; printed with pytest -s): 1.5e-7 to 4.7e-7 per char configuration,
3.1e-7 for token input; tolerance 1e-5.
"""
import copy
import json
from pathlib import Path
from typing import Callable, Dict, List, Optional

import h5py
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from bilm.model import BidirectionalLanguageModel, dump_token_embeddings
from bilm.weights import write_random_weights
from numpy_bilm import NumpyBiLM, batch_char_ids, token_char_ids

ATOL = 1e-5
MAX_BATCH_SIZE = 5
BATCH_SIZES = [5, 1, 3, 5, 2, 4]  # every size up to max; rows >= b must keep their state

BASE_OPTIONS = {
    "lstm": {"dim": 16, "projection_dim": 8, "n_layers": 2, "cell_clip": 1.0,
             "proj_clip": 0.3, "use_skip_connections": False},
    "char_cnn": {"n_characters": 262, "max_characters_per_token": 12,
                 "filters": [[1, 4], [2, 6], [3, 8], [4, 6]], "activation": "relu",
                 "embedding": {"dim": 4}, "n_highway": 2},
}

# the last words are longer than max_characters_per_token - 2 = 10 bytes
WORDS = ["the", "a", "cat", "sat", "on", "mat", ".", ",", "'s", "--", "naïve", "café",
         "日本語", "Москва", "😀👍", "x", "42", "(", ")", "don't", "e.g.",
         "Ελληνικά", "Supercalifragilistic", "ünïcødé-ünïcødé"]


def _set(section: str, **values) -> Callable[[dict], None]:
    def change(options):
        for key, value in values.items():
            if value is _DROP:
                del options[section][key]
            else:
                options[section][key] = value
    return change


_DROP = object()

# name -> changes to BASE_OPTIONS
CONFIGS: Dict[str, List[Callable[[dict], None]]] = {
    "base": [],
    "skip_connections_2_layers": [_set("lstm", use_skip_connections=True)],
    "skip_connections_3_layers": [_set("lstm", use_skip_connections=True, n_layers=3)],
    "tanh_no_highway_key": [_set("char_cnn", activation="tanh", n_highway=_DROP)],
    "highway_zero": [_set("char_cnn", n_highway=0)],
    # 2 + 3 + 3 filters == projection_dim 8: no CNN_proj
    "no_cnn_projection": [_set("char_cnn", filters=[[1, 2], [2, 3], [3, 3]])],
    "one_layer_default": [_set("lstm", n_layers=_DROP)],
    "three_layers": [_set("lstm", n_layers=3)],
    "no_clipping_null": [_set("lstm", cell_clip=None, proj_clip=None)],
    "no_clipping_absent": [_set("lstm", cell_clip=_DROP, proj_clip=_DROP)],
    # projection_dim == dim: no W_P_0, state h is [dim]
    "projection_equals_dim": [_set("lstm", dim=8, proj_clip=None)],
    # TF1 LSTMCell applies proj_clip only when it projects
    "projection_equals_dim_with_proj_clip": [_set("lstm", dim=8, proj_clip=0.05)],
    "everything_off": [_set("lstm", n_layers=1, cell_clip=None, proj_clip=None, dim=8,
                            use_skip_connections=True),
                       _set("char_cnn", n_highway=0, activation="tanh",
                            filters=[[1, 4], [3, 4]])],
}

def make_options(changes) -> dict:
    options = copy.deepcopy(BASE_OPTIONS)
    for change in changes:
        change(options)
    return options


def write_model(tmp_path: Path, options: dict, seed: int = 0):
    options_file = tmp_path / "options.json"
    with open(options_file, "w", encoding="utf-8") as fout:
        json.dump(options, fout)
    weight_file = tmp_path / "weights.hdf5"
    write_random_weights(options, str(weight_file), seed=seed)
    return options_file, weight_file


def make_sentence_batches(seed: int = 0) -> List[List[List[str]]]:
    """Batches of BATCH_SIZES sentences of 1 to 40 tokens (both extremes present)."""
    rng = np.random.default_rng(seed)
    batches = []
    for i, size in enumerate(BATCH_SIZES):
        lengths = list(rng.integers(1, 41, size=size))
        if i == 0:
            lengths[0], lengths[-1] = 1, 40
        if i == 3:
            lengths[1] = 40
        batches.append([[WORDS[k] for k in rng.integers(0, len(WORDS), size=n)]
                        for n in lengths])
    return batches


def run_tf(options_file, weight_file, batches: List[np.ndarray],
           use_character_inputs: bool = True, embedding_weight_file=None,
           max_chars: Optional[int] = None) -> List[dict]:
    """All batches, in order, through one TF model and session."""
    with tf.Graph().as_default():
        shape = (None, None, max_chars) if use_character_inputs else (None, None)
        ids = tf.placeholder("int32", shape)
        model = BidirectionalLanguageModel(
            str(options_file), str(weight_file), use_character_inputs=use_character_inputs,
            embedding_weight_file=None if embedding_weight_file is None
            else str(embedding_weight_file),
            max_batch_size=MAX_BATCH_SIZE)
        ops = model(ids)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            return [sess.run(ops, feed_dict={ids: batch}) for batch in batches]


def compare(tf_out: dict, np_out: dict, where: str) -> float:
    """Assert all outputs agree; return the largest abs difference."""
    np.testing.assert_array_equal(tf_out["lengths"], np_out["lengths"], err_msg=f"{where}: lengths")
    np.testing.assert_array_equal(tf_out["mask"], np_out["mask"], err_msg=f"{where}: mask")
    assert tf_out["mask"].dtype == bool, where
    assert tf_out["lm_embeddings"].shape == np_out["lm_embeddings"].shape, where
    assert tf_out["token_embeddings"].shape == np_out["token_embeddings"].shape, where
    errors = [0.0]

    def check(actual, expected, what):
        np.testing.assert_allclose(actual, expected, atol=ATOL, rtol=0, err_msg=f"{where}: {what}")
        if actual.size:
            errors.append(float(np.abs(actual - expected).max()))

    mask = np_out["mask"]
    for k in range(1, np_out["lm_embeddings"].shape[1]):  # LSTM layers, padding included
        check(tf_out["lm_embeddings"][:, k], np_out["lm_embeddings"][:, k],
              f"lm_embeddings layer {k}")
    # layer 0 at padding positions: see test_layer0_padding_matches_original
    check(tf_out["lm_embeddings"][:, 0][mask], np_out["lm_embeddings"][:, 0][mask],
          "lm_embeddings layer 0 (words)")
    check(tf_out["token_embeddings"], np_out["token_embeddings"], "token_embeddings")
    return max(errors)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_char_model_matches_numpy(tmp_path, config):
    options = make_options(CONFIGS[config])
    options_file, weight_file = write_model(tmp_path, options)
    max_chars = options["char_cnn"]["max_characters_per_token"]
    batches = [batch_char_ids(sentences, max_chars) for sentences in make_sentence_batches()]

    tf_outputs = run_tf(options_file, weight_file, batches, max_chars=max_chars)
    reference = NumpyBiLM(options, weight_file, max_batch_size=MAX_BATCH_SIZE)
    max_error = 0.0
    for i, (batch, tf_out) in enumerate(zip(batches, tf_outputs)):
        np_out = reference.run(batch)
        max_error = max(max_error, compare(tf_out, np_out, f"{config}, batch {i}"))
    print(f"\n{config}: TF vs NumPy max abs error {max_error:.3g}")


def test_configs_exercise_what_they_claim(tmp_path):
    """Guard the test itself: the clips bind, and the state carries over."""
    options = make_options([])
    _, weight_file = write_model(tmp_path, options)
    batches = [batch_char_ids(s, 12) for s in make_sentence_batches()]
    clipped = NumpyBiLM(options, weight_file, max_batch_size=MAX_BATCH_SIZE)
    unclipped_options = make_options(CONFIGS["no_clipping_null"])
    unclipped = NumpyBiLM(unclipped_options, weight_file, max_batch_size=MAX_BATCH_SIZE)
    fresh = NumpyBiLM(options, weight_file, max_batch_size=MAX_BATCH_SIZE)
    out_clipped = [clipped.run(b)["lm_embeddings"] for b in batches]
    out_unclipped = [unclipped.run(b)["lm_embeddings"] for b in batches]
    assert np.abs(out_clipped[0][:, 1:]).max() == pytest.approx(0.3)
    assert max(np.abs(a - b).max() for a, b in zip(out_clipped, out_unclipped)) > 1e-2
    # a later batch differs from the same batch run on zero states
    assert np.abs(fresh.run(batches[3])["lm_embeddings"] - out_clipped[3]).max() > 1e-3

    equal_dim = make_options(CONFIGS["projection_equals_dim_with_proj_clip"])
    _, weight_file = write_model(tmp_path, equal_dim)
    out = NumpyBiLM(equal_dim, weight_file).run(batches[0])["lm_embeddings"]
    assert np.abs(out[:, 1:]).max() > 0.05  # proj_clip 0.05 must not apply
    with h5py.File(weight_file, "r") as fin:
        assert not any(name.endswith("W_P_0") for name in _dataset_names(fin))


def _dataset_names(fin) -> List[str]:
    names = []
    fin.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def test_layer0_padding_matches_original(tmp_path):
    """After <S>/</S> removal the original left the padding token's embedding in
    layer 0 past each sentence (its reverse_sequence trick), zeros in LSTM layers."""
    options = make_options([])
    options_file, weight_file = write_model(tmp_path, options)
    batch = batch_char_ids([["a"], WORDS[:9]], 12)
    tf_out = run_tf(options_file, weight_file, [batch], max_chars=12)[0]
    original = NumpyBiLM(options, weight_file, layer0_padding="original").run(batch)
    padding = ~original["mask"]
    np.testing.assert_allclose(tf_out["lm_embeddings"][:, 0][padding],
                               original["lm_embeddings"][:, 0][padding], atol=ATOL)
    assert np.abs(original["lm_embeddings"][:, 0][padding]).max() > 1e-3
    lstm_layers = tf_out["lm_embeddings"][:, 1:]
    np.testing.assert_array_equal(
        lstm_layers[np.broadcast_to(padding[:, None], lstm_layers.shape[:3])], 0.0)


def test_token_model_matches_numpy(tmp_path):
    options = {"lstm": dict(BASE_OPTIONS["lstm"], use_skip_connections=True, n_layers=3)}
    options_file, weight_file = write_model(tmp_path, options, seed=7)
    rng = np.random.default_rng(1)
    vocab_size, bos, eos = 30, 1, 2  # ids already +1 (0 = padding)
    embedding_file = tmp_path / "embedding.hdf5"
    with h5py.File(embedding_file, "w") as fout:
        fout.create_dataset("embedding", data=rng.normal(0, 0.5, (vocab_size, 8)).astype("float32"))
    batches = []
    for size in BATCH_SIZES:
        lengths = rng.integers(1, 41, size=size)
        ids = np.zeros((size, lengths.max() + 2), dtype=np.int64)
        for row, n in enumerate(lengths):
            ids[row, :n + 2] = [bos] + list(rng.integers(3, vocab_size + 1, size=n)) + [eos]
        batches.append(ids)

    tf_outputs = run_tf(options_file, weight_file, batches, use_character_inputs=False,
                        embedding_weight_file=embedding_file)
    reference = NumpyBiLM(options, weight_file, use_character_inputs=False,
                          embedding_weight_file=embedding_file, max_batch_size=MAX_BATCH_SIZE)
    max_error = 0.0
    for i, (batch, tf_out) in enumerate(zip(batches, tf_outputs)):
        np_out = reference.run(batch)
        max_error = max(max_error, compare(tf_out, np_out, f"token input, batch {i}"))
        # token input: layer 0 padding is the zero padding row everywhere
        np.testing.assert_array_equal(tf_out["lm_embeddings"][:, 0][~np_out["mask"]], 0.0)
    print(f"\ntoken input: TF vs NumPy max abs error {max_error:.3g}")


def test_dump_token_embeddings_then_token_model(tmp_path):
    """dump_token_embeddings rows equal the NumPy char CNN, and the token model
    fed with them gives the char model's lm_embeddings."""
    options = make_options(CONFIGS["skip_connections_2_layers"])
    options_file, weight_file = write_model(tmp_path, options, seed=3)
    vocab = ["<S>", "</S>", "<UNK>"] + WORDS
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    embedding_file = tmp_path / "token_embeddings.hdf5"
    dump_token_embeddings(str(vocab_file), str(options_file), str(weight_file),
                          str(embedding_file))

    reference = NumpyBiLM(options, weight_file, max_batch_size=MAX_BATCH_SIZE)
    char_ids = np.stack([token_char_ids(word, 12) for word in vocab])[None]
    expected = reference.char_cnn(char_ids)[0]
    with h5py.File(embedding_file, "r") as fin:
        dumped = fin["embedding"][...]
    assert dumped.shape == (len(vocab), 8) and dumped.dtype == np.float32
    np.testing.assert_allclose(dumped, expected, atol=ATOL)

    sentences = make_sentence_batches(seed=5)
    word_id = {word: k + 1 for k, word in enumerate(vocab)}
    token_batches = []
    for batch in sentences:
        ids = np.zeros((len(batch), max(map(len, batch)) + 2), dtype=np.int64)
        for row, sentence in enumerate(batch):
            ids[row, :len(sentence) + 2] = [word_id[w] for w in ["<S>"] + sentence + ["</S>"]]
        token_batches.append(ids)
    tf_outputs = run_tf(options_file, weight_file, token_batches, use_character_inputs=False,
                        embedding_weight_file=embedding_file)
    for i, (batch, tf_out) in enumerate(zip(sentences, tf_outputs)):
        np_out = reference.run(batch_char_ids(batch, 12))
        mask = np_out["mask"]
        np.testing.assert_array_equal(tf_out["mask"], mask)
        np.testing.assert_allclose(tf_out["lm_embeddings"].transpose(0, 2, 1, 3)[mask],
                                   np_out["lm_embeddings"].transpose(0, 2, 1, 3)[mask],
                                   atol=ATOL, err_msg=f"batch {i}")
