"""The NumPy biLM (tests/numpy_bilm.py) against the outputs of the original TF1 code.

This validates the independent reference implementation itself, so that the
TF graph can then be compared with it on configurations the TF1 fixtures do
not cover. Character ids come from the small builder in numpy_bilm.py
(SPEC section 2), not ``bilm.data``, so this path shares no code with the package.
"""
import json
from pathlib import Path

import h5py
import numpy as np

from numpy_bilm import (NumpyBiLM, batch_char_ids, lstm_step, reverse_within_lengths,
                        token_char_ids)


def test_char_ids_follow_spec():
    ids = token_char_ids("ab", 6)
    np.testing.assert_array_equal(ids, [259, 98, 99, 260, 261, 261])
    np.testing.assert_array_equal(token_char_ids("<S>", 5), [259, 257, 260, 261, 261])
    np.testing.assert_array_equal(token_char_ids("</S>", 5), [259, 258, 260, 261, 261])
    # truncated to max_chars - 2 bytes; a 2-byte character counts twice
    np.testing.assert_array_equal(token_char_ids("é" * 5, 6),
                                  [259, 0xC3 + 1, 0xA9 + 1, 0xC3 + 1, 0xA9 + 1, 260])
    batch = batch_char_ids([["a"], ["a", "b", "c"]], 5)
    assert batch.shape == (2, 5, 5)
    assert (batch[0, 3:] == 0).all() and (batch[1, 4] > 0).any()


def test_lstm_step_matches_hand_computation():
    rng = np.random.default_rng(0)
    x, c, h = rng.normal(size=(1, 3)), rng.normal(size=(1, 4)), rng.normal(size=(1, 2))
    kernel, bias, proj = rng.normal(size=(5, 16)), rng.normal(size=16), rng.normal(size=(4, 2))
    h_new, c_new = lstm_step(x, c, h, kernel, bias, proj, cell_clip=0.5, proj_clip=0.25)
    z = np.hstack([x, h]) @ kernel + bias
    gate = lambda v: 1 / (1 + np.exp(-v))
    expected_c = np.clip(gate(z[:, 8:12] + 1) * c + gate(z[:, :4]) * np.tanh(z[:, 4:8]), -0.5, 0.5)
    expected_h = np.clip((gate(z[:, 12:]) * np.tanh(expected_c)) @ proj, -0.25, 0.25)
    np.testing.assert_allclose(c_new, expected_c)
    np.testing.assert_allclose(h_new, expected_h)
    # no projection: TF1 LSTMCell does not clip the output
    h_plain, _ = lstm_step(x, c, rng.normal(size=(1, 4)), rng.normal(size=(7, 16)), bias, None,
                           cell_clip=None, proj_clip=1e-3)
    assert np.abs(h_plain).max() > 1e-3


def test_reverse_within_lengths():
    x = np.arange(8).reshape(2, 4)
    np.testing.assert_array_equal(reverse_within_lengths(x, np.array([3, 1])),
                                  [[2, 1, 0, 3], [4, 5, 6, 7]])


def test_matches_tf1_top_layer(tf1_fixtures: Path):
    model_dir = tf1_fixtures / "model"
    with open(model_dir / "options.json", encoding="utf-8") as fin:
        options = json.load(fin)
    with open(model_dir / "lm_embeddings_sentences.json", encoding="utf-8") as fin:
        sentence_lists = json.load(fin)
    max_chars = options["char_cnn"]["max_characters_per_token"]
    bilm = NumpyBiLM(options, model_dir / "lm_weights.hdf5", max_batch_size=4)

    expected = [h5py.File(model_dir / f"lm_embeddings_{k}.hdf5", "r") for k in range(3)]
    max_error = 0.0
    try:
        for i in range(10):  # in order: the model is stateful
            sentences = [sentence_lists[k][i].split() for k in range(3)]
            out = bilm.run(batch_char_ids(sentences, max_chars))
            n_layers = options["lstm"]["n_layers"]
            assert out["lm_embeddings"].shape[:2] == (3, n_layers + 1)
            for k, sentence in enumerate(sentences):
                n_tokens = len(sentence)
                assert out["lengths"][k] == n_tokens
                assert out["mask"][k].sum() == n_tokens and out["mask"][k, :n_tokens].all()
                halves = expected[k][str(i)][...]
                top = np.concatenate([halves[0], halves[1]], axis=-1)
                actual = out["lm_embeddings"][k, 2, :n_tokens]
                max_error = max(max_error, float(np.abs(actual - top).max()))
                np.testing.assert_allclose(actual, top, atol=1e-6, rtol=0,
                                           err_msg=f"batch {i}, sentence list {k}")
    finally:
        for fin in expected:
            fin.close()
    print(f"NumPy biLM vs TF1 fixtures: max abs error {max_error:.3g}")
    # rows 3 of the 4 state rows were never used and must still be zero
    for direction_states in bilm.states:
        for c, h in direction_states:
            assert not c[3].any() and not h[3].any()
            assert c[:3].any() and h[:3].any()


def test_state_changes_outputs(tf1_fixtures: Path):
    """The same batch twice gives different outputs (stateful), and a reset restores them."""
    model_dir = tf1_fixtures / "model"
    bilm = NumpyBiLM(model_dir / "options.json", model_dir / "lm_weights.hdf5", max_batch_size=4)
    ids = batch_char_ids([["Don", "'t", "!"]], 50)
    first = bilm.run(ids)["lm_embeddings"]
    second = bilm.run(ids)["lm_embeddings"]
    assert np.abs(first[:, 1:] - second[:, 1:]).max() > 1e-4
    np.testing.assert_array_equal(first[:, 0], second[:, 0])
    bilm.reset_states()
    np.testing.assert_array_equal(bilm.run(ids)["lm_embeddings"], first)
