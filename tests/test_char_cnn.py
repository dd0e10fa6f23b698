"""The char CNN's convolutions over a prefix of each token's positions give
the same values and gradients as over all max_characters_per_token positions.

`layers._char_convolutions` groups tokens by how many leading positions their
max-pool needs (`_needed_positions`) and runs each group on that prefix only;
here the same graph with `position_bounds` forced to the full width is the
reference.
"""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from bilm import layers
from numpy_bilm import token_char_ids

MAX_CHARS = 50
CNN_OPTIONS = {"n_characters": 262, "max_characters_per_token": MAX_CHARS,
               "filters": [[1, 4], [2, 4], [3, 8], [5, 8], [7, 16]],
               "embedding": {"dim": 4}, "n_highway": 1}


def _token_ids(words, shift=1):
    """int [1, len(words), MAX_CHARS]: the Batcher's ids (shift 1, with 0 for
    an empty slot) or the trainer's (shift 0)."""
    ids = np.zeros([1, len(words), MAX_CHARS], np.int32)
    for k, word in enumerate(words):
        if word is not None:
            ids[0, k] = token_char_ids(word, MAX_CHARS) - 1 + shift
    return ids


# every group: short words, up to 15 characters, longer, truncated at 48, empty
# slots; the second list leaves two groups empty
WORDS = (["a", ".", "cat", "running", "sentence", "international", "characteristically",
          "x" * 48, "y" * 60, "naïve", "日本語", None, "supercalifragilistic", "the"]
         + [None] * 3)


def _cnn_values_and_gradients(ids, activation, full_width, seed=0):
    options = dict(CNN_OPTIONS, activation=activation)
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        with tf.variable_scope("cnn"):
            weights = layers.create_char_cnn_weights(options, projection_dim=8)
        if full_width:
            original = layers.position_bounds
            layers.position_bounds = lambda max_chars, max_width: [max_chars]
        try:
            out = layers.char_cnn(tf.constant(ids), weights, options)
        finally:
            if full_width:
                layers.position_bounds = original
        variables = tf.trainable_variables()
        gradients = [tf.convert_to_tensor(g) for g in  # the char_embed one is sparse
                     tf.gradients(tf.reduce_sum(tf.sin(out)), variables)]
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            return session.run([out, gradients])


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("shift", [1, 0])
@pytest.mark.parametrize("words", [WORDS, ["a", "cat", None]], ids=["all-groups", "one-group"])
def test_prefix_convolutions_match_all_positions(activation, shift, words):
    ids = _token_ids(words, shift)
    values, grads = _cnn_values_and_gradients(ids, activation, full_width=False)
    expected, expected_grads = _cnn_values_and_gradients(ids, activation, full_width=True)
    assert values.shape == (1, len(words), 8)
    np.testing.assert_array_equal(values, expected)
    for got, want in zip(grads, expected_grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_needed_positions():
    words = ["a", "cat", "x" * 48, None]
    ids = _token_ids(words).reshape(len(words), MAX_CHARS)
    with tf.Graph().as_default(), tf.Session() as session:
        needed = session.run(layers._needed_positions(tf.constant(ids), max_width=7))
    # BOW + characters + EOW before the padding run, then the widest window;
    # a 48-character word has no padding (its run is the final EOW alone)
    assert needed.tolist() == [3 + 7, 5 + 7, 49 + 7, 0 + 7]
    assert layers.position_bounds(MAX_CHARS, 7) == [16, 24, 50]
    assert layers.position_bounds(20, 7) == [16, 20]
