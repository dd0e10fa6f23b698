"""The Keras 3 layer (bilm/keras_layer.py) on the bundled model: same vectors
as the TF2 module, masks, training with frozen or fine-tuned biLM weights,
and save/load of a model that contains it."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

keras = pytest.importorskip("keras")

from bundled import DIM
from bilm.default_model import OPTIONS_FILE, WEIGHT_FILE  # noqa: E402
from bilm.export import ElmoModule  # noqa: E402
from bilm.keras_layer import ElmoEmbedding  # noqa: E402

TOKENS = [["good", "café", "😀"], ["bad", "", ""], ["日本", "was", "great"],
          ["awful", "plot", ""], ["nice", "", ""], ["boring", "and", "slow"],
          ["lovely", "film", ""], ["terrible", "", ""]]
LABELS = np.array([1, 0, 1, 0, 1, 0, 1, 0])


def _tokens():
    return tf.constant(TOKENS)


def _classifier(weight_file=WEIGHT_FILE, **layer_args):
    keras.utils.set_random_seed(0)
    tokens = keras.Input(shape=(None,), dtype="string")
    vectors = ElmoEmbedding(OPTIONS_FILE, weight_file, name="elmo", **layer_args)(tokens)
    pooled = keras.layers.GlobalAveragePooling1D()(vectors)
    model = keras.Model(tokens, keras.layers.Dense(2)(pooled))
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _train(model, steps):
    before = model.evaluate(_tokens(), LABELS, verbose=0)
    model.fit(_tokens(), LABELS, epochs=steps, batch_size=len(LABELS), shuffle=False,
              verbose=0)
    return before, model.evaluate(_tokens(), LABELS, verbose=0)


def _bilm_values(layer):
    return {name: variable.numpy().copy() for name, variable in layer.bilm_weights.items()}


@pytest.fixture(scope="module")
def module_outputs():
    lengths = [sum(token != "" for token in row) for row in TOKENS]
    module = ElmoModule(OPTIONS_FILE, WEIGHT_FILE)  # tf.function methods hold it weakly
    return module.tokens(TOKENS, lengths)


def test_layer_matches_module_and_masks(module_outputs):
    layer = ElmoEmbedding(OPTIONS_FILE, WEIGHT_FILE)
    vectors = layer(_tokens()).numpy()
    mask = layer.compute_mask(_tokens()).numpy()
    np.testing.assert_array_equal(mask, np.array(TOKENS) != "")
    assert vectors.shape == (len(TOKENS), 3, DIM)
    np.testing.assert_allclose(vectors[mask], module_outputs["elmo"].numpy()[mask], atol=1e-5)
    assert not vectors[~mask].any()
    assert len(layer.trainable_weights) == 2  # ELMo_W and ELMo_gamma
    assert all(not w.trainable for w in layer.bilm_weights.values())


def test_layer_norm_and_top_only(module_outputs):
    mask = np.array(TOKENS) != ""
    lengths = mask.sum(axis=1)
    char_ids_module = ElmoModule(OPTIONS_FILE, WEIGHT_FILE)
    from bilm.export import tokens_to_char_ids
    char_ids = tokens_to_char_ids(_tokens(), lengths, 50)
    lm_embeddings = char_ids_module.bilm(char_ids)["lm_embeddings"].numpy().astype(np.float64)
    # SPEC §3 by hand: each layer normalized over the unmasked positions, even mix
    expected = 0.0
    weights = np.full(3, 1.0 / 3)
    for k in range(3):
        layer_values = lm_embeddings[:, k]
        count = mask.sum() * DIM
        mean = (layer_values * mask[..., None]).sum() / count
        variance = ((((layer_values - mean) * mask[..., None]) ** 2).sum()) / count
        expected = expected + weights[k] * (layer_values - mean) / np.sqrt(variance + 1e-12)
    normed = ElmoEmbedding(OPTIONS_FILE, WEIGHT_FILE, do_layer_norm=True)(_tokens()).numpy()
    np.testing.assert_allclose(normed[mask], expected[mask], atol=1e-4)
    top = ElmoEmbedding(OPTIONS_FILE, WEIGHT_FILE, use_top_only=True)(_tokens()).numpy()
    np.testing.assert_allclose(top[mask], module_outputs["lstm_outputs2"].numpy()[mask],
                               atol=1e-5)


def test_l2_penalty_on_mix_weights():
    layer = ElmoEmbedding(OPTIONS_FILE, WEIGHT_FILE, l2_coef=0.5)
    layer(_tokens())
    layer.mix_weights.assign([1.0, 2.0, 0.0])
    assert float(sum(layer.losses)) == pytest.approx(0.5 * 5.0)


def test_training_keeps_bilm_frozen_and_save_load(tmp_path):
    model = _classifier()
    layer = model.get_layer("elmo")
    bilm_before = _bilm_values(layer)
    loss_before, loss_after = _train(model, steps=15)
    assert loss_after < loss_before
    assert np.abs(layer.mix_weights.numpy()).max() > 1e-4  # the mix was trained
    for name, value in _bilm_values(layer).items():
        np.testing.assert_array_equal(value, bilm_before[name], err_msg=name)

    predictions = model.predict(_tokens(), verbose=0)
    path = str(tmp_path / "classifier.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded.predict(_tokens(), verbose=0), predictions, atol=1e-6)
    np.testing.assert_array_equal(reloaded.get_layer("elmo").mix_weights.numpy(),
                                  layer.mix_weights.numpy())


def test_fine_tuning_and_load_without_weight_file(tmp_path):
    weight_file = str(tmp_path / "weights.hdf5")
    shutil.copy(WEIGHT_FILE, weight_file)
    model = _classifier(weight_file, fine_tune=True)
    layer = model.get_layer("elmo")
    assert len(layer.trainable_weights) == len(layer.bilm_weights) + 2
    bilm_before = _bilm_values(layer)
    _train(model, steps=2)
    changed = [name for name, value in _bilm_values(layer).items()
               if not np.array_equal(value, bilm_before[name])]
    assert "char_embed" in changed
    assert "RNN_1/RNN/MultiRNNCell/Cell1/LSTMCell/W_0" in changed

    predictions = model.predict(_tokens(), verbose=0)
    path = str(tmp_path / "fine_tuned.keras")
    model.save(path)
    os.remove(weight_file)  # the .keras file holds the fine-tuned weights
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded.predict(_tokens(), verbose=0), predictions, atol=1e-6)
    config = reloaded.get_layer("elmo").get_config()
    assert config["weight_file"] == weight_file and config["fine_tune"] is True


def test_clear_error_without_keras():
    script = ("import sys; sys.modules['keras'] = None\n"
              "try:\n    import bilm.keras_layer\n"
              "except ImportError as err:\n    print(err)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True,
                            text=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL="3"))
    assert "bilm.keras_layer needs Keras 3" in result.stdout, result.stderr[-2000:]
