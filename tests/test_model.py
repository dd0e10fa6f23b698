"""The inference biLM against the outputs of the original TF1 code.

The TF1 fixtures hold the top LSTM layer only (reference README: forward and
backward halves of layer 2); every other output (layer 0, layer 1, the token
embeddings) is compared with the NumPy biLM of tests/numpy_bilm.py, run on the
same batches in the same order (test_numpy_reference.py checks that one
against the fixtures).
"""
import json

import h5py
import numpy as np
import tensorflow.compat.v1 as tf

from bilm import (Batcher, BidirectionalLanguageModel, TokenBatcher,
                  dump_token_embeddings)
from numpy_bilm import NumpyBiLM

N_BATCHES = 10
NUMPY_ATOL = 1e-5  # float32 graph vs the float64 NumPy biLM (test_model_vs_numpy.py)


def _reference(model_dir):
    """Sentences [3][10] and expected top-layer outputs [3][10] of [n, 32]."""
    with open(model_dir / "lm_embeddings_sentences.json", encoding="utf-8") as fin:
        sentences = json.load(fin)
    expected = []
    for k in range(len(sentences)):
        with h5py.File(model_dir / f"lm_embeddings_{k}.hdf5", "r") as fin:
            expected.append([np.concatenate([fin[str(i)][0], fin[str(i)][1]], axis=-1)
                             for i in range(N_BATCHES)])
    return sentences, expected


def _run_reference_batches(sess, ops, ids, batcher, sentences, expected, numpy_bilm=None):
    """Run the 10 stateful batches in order; return the largest error against
    the TF1 top layer. With `numpy_bilm` (a NumpyBiLM of the same model, fed the
    character ids of the same batches), every layer and the token embeddings
    are compared with it as well."""
    largest_error = 0.0
    for i in range(N_BATCHES):
        batch = [sentences[k][i].split() for k in range(3)]
        batch_ids = batcher.batch_sentences(batch)
        out = sess.run(ops, feed_dict={ids: batch_ids})
        lengths = out["lengths"]
        assert list(lengths) == [len(s) for s in batch]
        for k in range(3):
            actual = out["lm_embeddings"][k, 2, :lengths[k]]
            assert np.allclose(actual, expected[k][i], atol=1e-6), (i, k)
            largest_error = max(largest_error, float(np.abs(actual - expected[k][i]).max()))
        if numpy_bilm is not None:
            reference = numpy_bilm.run(batch_ids)
            np.testing.assert_array_equal(out["mask"], reference["mask"])
            for layer in range(reference["lm_embeddings"].shape[1]):
                np.testing.assert_allclose(
                    out["lm_embeddings"][:, layer][out["mask"]],
                    reference["lm_embeddings"][:, layer][reference["mask"]],
                    atol=NUMPY_ATOL, rtol=0, err_msg=f"batch {i}, layer {layer}")
            np.testing.assert_allclose(out["token_embeddings"], reference["token_embeddings"],
                                       atol=NUMPY_ATOL, rtol=0, err_msg=f"batch {i}")
    return largest_error


def test_character_input_matches_tf1(tf1_fixtures):
    model_dir = tf1_fixtures / "model"
    sentences, expected = _reference(model_dir)
    batcher = Batcher(str(model_dir / "vocab_test.txt"), 50)
    with tf.Graph().as_default():
        ids = tf.placeholder("int32", (None, None, 50))
        model = BidirectionalLanguageModel(str(model_dir / "options.json"),
                                           str(model_dir / "lm_weights.hdf5"),
                                           max_batch_size=4)
        ops = model(ids)
        assert tf.trainable_variables() == []
        graph = model._graphs[ids]
        numpy_bilm = NumpyBiLM(model_dir / "options.json", model_dir / "lm_weights.hdf5",
                               max_batch_size=4)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            error = _run_reference_batches(sess, ops, ids, batcher, sentences, expected,
                                           numpy_bilm)
            print(f"largest error vs TF1 (characters): {error:.3g}")

            # All batches had 3 rows: row 3 of every state is still zero.
            third_rows = []
            for direction in ("forward", "backward"):
                for layer_states in sess.run(graph.lstm_init_states[direction]):
                    for state in layer_states:
                        assert np.abs(state[3]).sum() == 0.0
                        assert np.abs(state[2]).sum() > 0.0
                        third_rows.append(state[2].copy())
            # A batch of 2 leaves row 2 untouched and changes rows 0-1.
            sess.run(ops["lm_embeddings"], feed_dict={ids: np.ones((2, 5, 50), np.int32)})
            k = 0
            for direction in ("forward", "backward"):
                for layer_states in sess.run(graph.lstm_init_states[direction]):
                    for state in layer_states:
                        np.testing.assert_array_equal(state[2], third_rows[k])
                        assert np.abs(state[3]).sum() == 0.0
                        k += 1


def test_token_input_matches_tf1(tf1_fixtures, tmp_path):
    model_dir = tf1_fixtures / "model"
    sentences, expected = _reference(model_dir)
    options_file = str(model_dir / "options.json")
    weight_file = str(model_dir / "lm_weights.hdf5")
    tokens = sorted({t for rows in sentences for s in rows for t in s.split()}
                    | {"<S>", "</S>"})
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("\n".join(tokens), encoding="utf-8")
    embedding_file = str(tmp_path / "embeddings.hdf5")
    dump_token_embeddings(str(vocab_file), options_file, weight_file, embedding_file)
    with h5py.File(embedding_file, "r") as fin:
        assert list(fin) == ["embedding"]
        assert fin["embedding"].shape == (len(tokens), 16)

    batcher = TokenBatcher(str(vocab_file))
    with tf.Graph().as_default():
        ids = tf.placeholder("int32", (None, None))
        model = BidirectionalLanguageModel(options_file, weight_file,
                                           use_character_inputs=False,
                                           embedding_weight_file=embedding_file,
                                           max_batch_size=4)
        ops = model(ids)
        assert tf.trainable_variables() == []
        numpy_bilm = NumpyBiLM(options_file, weight_file, use_character_inputs=False,
                               embedding_weight_file=embedding_file, max_batch_size=4)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            error = _run_reference_batches(sess, ops, ids, batcher, sentences, expected,
                                           numpy_bilm)
            print(f"largest error vs TF1 (tokens): {error:.3g}")


def test_second_placeholder_shares_weights(tf1_fixtures):
    model_dir = tf1_fixtures / "model"
    sentences, _ = _reference(model_dir)
    batcher = Batcher(str(model_dir / "vocab_test.txt"), 50)
    batch = batcher.batch_sentences([s.split() for s in sentences[0][:2]])
    with tf.Graph().as_default():
        first = tf.placeholder("int32", (None, None, 50))
        second = tf.placeholder("int64", (None, None, 50))
        model = BidirectionalLanguageModel(str(model_dir / "options.json"),
                                           str(model_dir / "lm_weights.hdf5"))

        def weights():
            return [v for v in tf.global_variables() if "lstm_state" not in v.name]

        def states():
            return [v for v in tf.global_variables() if "lstm_state" in v.name]

        ops_first = model(first)
        weights_first, states_first = weights(), states()
        with h5py.File(model_dir / "lm_weights.hdf5", "r") as fin:
            n_datasets = len([name for name in _dataset_names(fin)])
        assert len(weights_first) == n_datasets  # one variable per hdf5 dataset
        assert all(v.name.startswith("bilm/") for v in weights_first)
        ops_second = model(second)
        assert model(first) is ops_first
        # the second placeholder reuses every weight variable (no copy) and
        # gets LSTM states of its own
        assert weights() == weights_first
        assert len(states()) == 2 * len(states_first)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            a = sess.run(ops_first["lm_embeddings"], {first: batch})
            b = sess.run(ops_second["lm_embeddings"], {second: batch})
    # each placeholder has its own LSTM states, so both start from zero
    np.testing.assert_array_equal(a, b)


def _dataset_names(hdf5_file):
    names = []
    hdf5_file.visititems(lambda name, obj: names.append(name)
                         if isinstance(obj, h5py.Dataset) else None)
    return names


def test_stateless_mode_ignores_previous_batches(tf1_fixtures):
    model_dir = tf1_fixtures / "model"
    sentences, _ = _reference(model_dir)
    batcher = Batcher(str(model_dir / "vocab_test.txt"), 50)
    probe = batcher.batch_sentences([sentences[1][0].split()])
    other = batcher.batch_sentences([s.split() for s in sentences[2][:3]])
    results = {}
    for stateless in (False, True):
        with tf.Graph().as_default():
            ids = tf.placeholder("int32", (None, None, 50))
            model = BidirectionalLanguageModel(
                str(model_dir / "options.json"), str(model_dir / "lm_weights.hdf5"),
                max_batch_size=4, stateless=stateless)
            ops = model(ids)
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                first = sess.run(ops["lm_embeddings"], {ids: probe})
                sess.run(ops["lm_embeddings"], {ids: other})
                again = sess.run(ops["lm_embeddings"], {ids: probe})
                results[stateless] = (first, again)
    first, again = results[True]
    np.testing.assert_allclose(first, again, atol=1e-6)
    np.testing.assert_allclose(results[False][0], first, atol=1e-6)
    drift = np.abs(results[False][1] - results[False][0]).max()
    assert drift > 1e-3, "stateful mode must carry state between batches"
