"""weight_layers (bilm/elmo.py) against a NumPy transcription of SPEC section 3.

bilm_ops is a plain dict of fed tensors, so no language model is needed.
"""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from bilm.elmo import weight_layers

N_LAYERS, DIM = 3, 6
BATCH, N_STEPS = 3, 5
LAYER_NORM_EPS = 1e-12


def numpy_weight_layers(lm_embeddings, mask, W, gamma, use_top_only=False,
                        do_layer_norm=False):
    """gamma * sum_k softmax(W + 1/L)_k * layer_k (optionally layer-normalized);
    gamma * top layer when use_top_only."""
    if use_top_only:
        return gamma * lm_embeddings[:, -1]
    n_layers = lm_embeddings.shape[1]
    logits = W + 1.0 / n_layers
    scalars = np.exp(logits - logits.max())
    scalars /= scalars.sum()
    broadcast_mask = mask[..., None].astype(np.float64)
    total = 0.0
    for k in range(n_layers):
        layer = lm_embeddings[:, k]
        if do_layer_norm:
            # mean/variance over unmasked positions and all dims; applied everywhere
            count = broadcast_mask.sum() * layer.shape[-1]
            mean = (layer * broadcast_mask).sum() / count
            variance = (((layer * broadcast_mask - mean) * broadcast_mask) ** 2).sum() / count
            layer = (layer - mean) / np.sqrt(variance + LAYER_NORM_EPS)
        total = total + scalars[k] * layer
    return gamma * total


@pytest.fixture
def inputs():
    rng = np.random.default_rng(3)
    # offset and scale so layer norm does something visible
    lm_embeddings = rng.normal(0.7, 2.0, size=(BATCH, N_LAYERS, N_STEPS, DIM))
    lengths = np.array([5, 2, 3])
    mask = np.arange(N_STEPS)[None, :] < lengths[:, None]
    # non-zero values at masked positions must not leak into the statistics
    lm_embeddings += 5.0 * (~mask)[:, None, :, None]
    return lm_embeddings.astype(np.float32), mask


@pytest.fixture
def graph():
    with tf.Graph().as_default() as g:
        yield g


def make_bilm_ops():
    return {
        "lm_embeddings": tf.placeholder(tf.float32, (None, N_LAYERS, None, DIM)),
        "mask": tf.placeholder(tf.bool, (None, None)),
    }


def feed(bilm_ops, inputs):
    lm_embeddings, mask = inputs
    return {bilm_ops["lm_embeddings"]: lm_embeddings, bilm_ops["mask"]: mask}


def elmo_variables(name):
    return sorted(v.name for v in tf.global_variables() if v.name.startswith(name + "_ELMo"))


def regularizers():
    return tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES)


def evaluate(sess, value, feed_dict):
    """regularization_op may be a plain number (no penalty) or a tensor-like
    (the collection holds lazily built tensors that sess.run accepts)."""
    if isinstance(value, (int, float)):
        return value
    return sess.run(value, feed_dict=feed_dict)


@pytest.mark.parametrize("do_layer_norm", [False, True])
def test_weighted_average_and_l2(graph, inputs, do_layer_norm):
    bilm_ops = make_bilm_ops()
    ret = weight_layers("elmo", bilm_ops, l2_coef=0.1, do_layer_norm=do_layer_norm)
    assert set(ret) == {"weighted_op", "regularization_op"}
    assert elmo_variables("elmo") == ["elmo_ELMo_W:0", "elmo_ELMo_gamma:0"]
    W_var, gamma_var = sorted(tf.global_variables(), key=lambda v: v.name)
    assert W_var.shape.as_list() == [N_LAYERS] and gamma_var.shape.as_list() == [1]
    assert len(regularizers()) == 1
    lm_embeddings, mask = inputs
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        np.testing.assert_array_equal(sess.run(W_var), np.zeros(N_LAYERS))
        np.testing.assert_array_equal(sess.run(gamma_var), np.ones(1))
        out = sess.run(ret["weighted_op"], feed(bilm_ops, inputs))
        assert out.shape == (BATCH, N_STEPS, DIM)
        expected = numpy_weight_layers(lm_embeddings.astype(np.float64), mask,
                                       np.zeros(N_LAYERS), 1.0, do_layer_norm=do_layer_norm)
        # layer norm is compared at unmasked positions here; see the masked test below
        np.testing.assert_allclose(out[mask], expected[mask], atol=1e-5, rtol=1e-5)
        feed_dict = feed(bilm_ops, inputs)
        assert evaluate(sess, ret["regularization_op"], feed_dict) == pytest.approx(0.0)

        W, gamma = np.array([0.3, -0.5, 1.2]), np.array([2.5])
        sess.run([W_var.assign(W), gamma_var.assign(gamma)])
        out = sess.run(ret["weighted_op"], feed(bilm_ops, inputs))
        expected = numpy_weight_layers(lm_embeddings.astype(np.float64), mask, W, gamma,
                                       do_layer_norm=do_layer_norm)
        np.testing.assert_allclose(out[mask], expected[mask], atol=1e-5, rtol=1e-5)
        if not do_layer_norm:
            np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)
        penalty = 0.1 * np.sum(W ** 2)
        assert evaluate(sess, ret["regularization_op"], feed_dict) == pytest.approx(
            penalty, rel=1e-6)
        # what a training loss sums: the collection, checked on its own
        assert sess.run(regularizers()[0], feed_dict) == pytest.approx(penalty, rel=1e-6)


def test_layer_norm_at_masked_positions_follows_original(graph, inputs):
    """The original normalized every position with the unmasked statistics
    (tf.nn.batch_normalization over the whole tensor), masked ones included."""
    bilm_ops = make_bilm_ops()
    ret = weight_layers("elmo", bilm_ops, l2_coef=0.0, do_layer_norm=True)
    lm_embeddings, mask = inputs
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        out = sess.run(ret["weighted_op"], feed(bilm_ops, inputs))
    expected = numpy_weight_layers(lm_embeddings.astype(np.float64), mask,
                                   np.zeros(N_LAYERS), 1.0, do_layer_norm=True)
    np.testing.assert_allclose(out[~mask], expected[~mask], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("do_layer_norm", [False, True])
@pytest.mark.parametrize("l2_coef", [None, 0.5])
def test_top_only(graph, inputs, l2_coef, do_layer_norm):
    bilm_ops = make_bilm_ops()
    ret = weight_layers("top", bilm_ops, l2_coef=l2_coef, use_top_only=True,
                        do_layer_norm=do_layer_norm)
    # no W, no regularizer; gamma still scales the top layer (no layer norm)
    assert elmo_variables("top") == ["top_ELMo_gamma:0"]
    assert regularizers() == []
    lm_embeddings, mask = inputs
    gamma_var = tf.global_variables()[0]
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        assert evaluate(sess, ret["regularization_op"], feed(bilm_ops, inputs)) == 0.0
        out = sess.run(ret["weighted_op"], feed(bilm_ops, inputs))
        np.testing.assert_allclose(out, lm_embeddings[:, -1], atol=1e-6)
        sess.run(gamma_var.assign([-1.5]))
        out = sess.run(ret["weighted_op"], feed(bilm_ops, inputs))
        expected = numpy_weight_layers(lm_embeddings, mask, None, -1.5, use_top_only=True)
        np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("do_layer_norm", [False, True])
def test_l2_coef_none_means_no_regularizer(graph, inputs, do_layer_norm):
    """The original crashed here (a Python 0.0 regularizer went into the collection)."""
    bilm_ops = make_bilm_ops()
    ret = weight_layers("plain", bilm_ops, l2_coef=None, do_layer_norm=do_layer_norm)
    assert elmo_variables("plain") == ["plain_ELMo_W:0", "plain_ELMo_gamma:0"]
    assert regularizers() == []
    lm_embeddings, mask = inputs
    W_var = [v for v in tf.global_variables() if v.name == "plain_ELMo_W:0"][0]
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(W_var.assign([1.0, 2.0, -3.0]))
        assert evaluate(sess, ret["regularization_op"], feed(bilm_ops, inputs)) == 0.0
        out = sess.run(ret["weighted_op"], feed(bilm_ops, inputs))
    expected = numpy_weight_layers(lm_embeddings.astype(np.float64), mask,
                                   np.array([1.0, 2.0, -3.0]), 1.0, do_layer_norm=do_layer_norm)
    np.testing.assert_allclose(out[mask], expected[mask], atol=1e-5, rtol=1e-5)


def test_one_regularizer_per_name(graph, inputs):
    bilm_ops = make_bilm_ops()
    first = weight_layers("input", bilm_ops, l2_coef=0.01)
    second = weight_layers("output", bilm_ops, l2_coef=0.02)
    weight_layers("unregularized", bilm_ops, l2_coef=None)
    weight_layers("top", bilm_ops, l2_coef=0.03, use_top_only=True)
    losses = regularizers()
    assert len(losses) == 2
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run([v.assign([1.0, 1.0, 2.0]) for v in tf.global_variables()
                  if v.name.endswith("_ELMo_W:0")])
        feed_dict = feed(bilm_ops, inputs)
        assert sorted(sess.run(losses, feed_dict)) == pytest.approx([0.06, 0.12], rel=1e-6)
        first_penalty = evaluate(sess, first["regularization_op"], feed_dict)
        second_penalty = evaluate(sess, second["regularization_op"], feed_dict)
        assert (first_penalty, second_penalty) == pytest.approx((0.06, 0.12), rel=1e-6)


@pytest.mark.parametrize("l2_coef", [None, 0.1])
def test_reuse_shares_weights(graph, inputs, l2_coef):
    bilm_ops = make_bilm_ops()
    other_ops = make_bilm_ops()
    first = weight_layers("shared", bilm_ops, l2_coef=l2_coef, do_layer_norm=True)
    with tf.variable_scope("", reuse=True):
        second = weight_layers("shared", other_ops, l2_coef=l2_coef, do_layer_norm=True)
    assert elmo_variables("shared") == ["shared_ELMo_W:0", "shared_ELMo_gamma:0"]
    assert len(tf.global_variables()) == 2
    assert len(regularizers()) == (0 if l2_coef is None else 1)
    W_var, gamma_var = sorted(tf.global_variables(), key=lambda v: v.name)
    lm_embeddings, mask = inputs
    W = np.array([-0.2, 0.4, 0.9])
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run([W_var.assign(W), gamma_var.assign([0.75])])
        out_first = sess.run(first["weighted_op"], feed(bilm_ops, inputs))
        out_second = sess.run(second["weighted_op"], feed(other_ops, inputs))
        # same math on the same input; only float32 reduction order may differ
        np.testing.assert_allclose(out_first, out_second, atol=1e-6, rtol=0)
        expected = numpy_weight_layers(lm_embeddings.astype(np.float64), mask,
                                       W, 0.75, do_layer_norm=True)
        np.testing.assert_allclose(out_first[mask], expected[mask], atol=1e-5, rtol=1e-5)
        # one shared penalty on the shared W; it may depend on the first call's
        # inputs, so feed both
        both = {**feed(bilm_ops, inputs), **feed(other_ops, inputs)}
        penalty = 0.0 if l2_coef is None else l2_coef * np.sum(W ** 2)
        for ret in (first, second):
            assert evaluate(sess, ret["regularization_op"], both) == pytest.approx(
                penalty, rel=1e-6)
        assert [sess.run(loss, both) for loss in regularizers()] == pytest.approx(
            [] if l2_coef is None else [penalty], rel=1e-6)
