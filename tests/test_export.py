"""The TF2 module and SavedModel export (bilm/export.py) against the graph-mode
stateless BidirectionalLanguageModel fed Batcher ids, on the bundled model."""
import json
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import tensorflow as tf

from bilm import Batcher, BidirectionalLanguageModel, weight_layers
from bilm.default_model import OPTIONS_FILE, VOCAB_FILE, WEIGHT_FILE
from bilm.cli import _build_parser, main
from bundled import PROJ
from bilm.export import ElmoModule, directory_size, tokens_to_char_ids

MAX_CHARS = 50
N_LAYERS = 2
TOLERANCE = 1e-5
LONG_TOKEN = "supercalifragilisticexpialidocious" * 2          # 68 bytes
LONG_UNICODE_TOKEN = "a" + "日本語" * 7                     # 64 bytes, cut mid-character
SENTENCES = [
    ["The", "café", "in", "日本", "😀", "was", "open", "."],
    [LONG_TOKEN, "é"],
    [],
    ["<S>", LONG_UNICODE_TOKEN, "</S>", "x"],
    ["Pretty", "good", "🙂🙂"],
]


def _padded(sentences):
    n_steps = max(len(sentence) for sentence in sentences)
    return ([sentence + [""] * (n_steps - len(sentence)) for sentence in sentences],
            [len(sentence) for sentence in sentences])


@pytest.fixture(scope="module")
def graph_reference():
    """Outputs of the graph-mode model on SENTENCES, with the even weight_layers mix."""
    char_ids = Batcher(VOCAB_FILE, MAX_CHARS).batch_sentences(SENTENCES)
    with tf.Graph().as_default():
        ids = tf.compat.v1.placeholder(tf.int64, [None, None, MAX_CHARS])
        model = BidirectionalLanguageModel(OPTIONS_FILE, WEIGHT_FILE, stateless=True)
        ops = model(ids)
        elmo = weight_layers("elmo", ops, l2_coef=None)["weighted_op"]
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            lm_embeddings, mask, lengths, elmo = sess.run(
                [ops["lm_embeddings"], ops["mask"], ops["lengths"], elmo],
                feed_dict={ids: char_ids})
    mask_float = mask[:, :, None].astype(np.float64)
    count = mask_float.sum(axis=1)
    default = np.where(count > 0, (elmo * mask_float).sum(axis=1) / np.maximum(count, 1), 0.0)
    expected = {"word_emb": lm_embeddings[:, 0, :, :PROJ], "elmo": elmo,
                "default": default, "sequence_len": lengths}
    for layer in range(1, N_LAYERS + 1):
        expected[f"lstm_outputs{layer}"] = lm_embeddings[:, layer]
    return {"char_ids": char_ids, "mask": mask, "outputs": expected,
            "lm_embeddings": lm_embeddings}


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """The bundled model exported through the `bilm export` command."""
    path = tmp_path_factory.mktemp("export") / "elmo"
    assert main(["export", "--options", OPTIONS_FILE, "--weights", WEIGHT_FILE, str(path)]) == 0
    print(f"export size of the bundled model: {directory_size(str(path)) / 1e6:.2f} MB")
    return path


@pytest.fixture(scope="module")
def loaded(export_dir):
    return tf.saved_model.load(str(export_dir))


def _max_differences(actual, expected):
    assert sorted(actual) == sorted(expected)
    differences = {}
    for name, value in expected.items():
        got = np.asarray(actual[name])
        assert got.shape == value.shape, name
        differences[name] = float(np.abs(got - value).max()) if value.size else 0.0
    return differences


def test_char_ids_equal_batcher(graph_reference):
    tokens, lengths = _padded(SENTENCES)
    char_ids = tokens_to_char_ids(tf.constant(tokens), tf.constant(lengths), MAX_CHARS)
    np.testing.assert_array_equal(char_ids.numpy(), graph_reference["char_ids"])
    # a wider token matrix than the longest sentence: the extra columns are 0
    wide = tokens_to_char_ids(tf.constant([row + ["zzz"] for row in tokens]),
                              tf.constant(lengths), MAX_CHARS).numpy()
    np.testing.assert_array_equal(wide[:, :-1], graph_reference["char_ids"])
    assert not wide[:, -1].any()


def test_saved_model_matches_graph_model(loaded, graph_reference):
    tokens, lengths = _padded(SENTENCES)
    outputs = loaded.signatures["tokens"](tokens=tf.constant(tokens),
                                          sequence_len=tf.constant(lengths, tf.int32))
    differences = _max_differences(outputs, graph_reference["outputs"])
    print("max |exported - graph model|:", json.dumps(differences))
    assert max(differences.values()) < TOLERANCE, differences


def test_default_and_tokens_signatures_agree(loaded):
    strings = [" ".join(sentence) for sentence in SENTENCES]
    strings[0] = "  " + strings[0].replace(" ", "   ") + " "  # runs of spaces split the same
    from_strings = loaded.signatures["default"](tf.constant(strings))  # positional, as TF Hub
    tokens, lengths = _padded(SENTENCES)
    from_tokens = loaded.signatures["tokens"](tokens=tf.constant(tokens),
                                              sequence_len=tf.constant(lengths, tf.int32))
    for name, value in from_tokens.items():
        np.testing.assert_allclose(from_strings[name].numpy(), value.numpy(), atol=1e-6,
                                   err_msg=name)
    np.testing.assert_array_equal(from_strings["sequence_len"].numpy(), lengths)


def test_saved_model_variables(loaded):
    trainable = sorted(v.name for v in loaded.trainable_variables)
    assert trainable == ["elmo/ELMo_W:0", "elmo/ELMo_gamma:0"]
    with h5py.File(WEIGHT_FILE, "r") as fin:  # one variable per biLM dataset, + W and gamma
        datasets = []
        fin.visititems(lambda name, obj: datasets.append(name)
                       if isinstance(obj, h5py.Dataset) else None)
    assert len(loaded.variables) == len(datasets) + 2
    assert os.path.isfile(os.path.join(loaded.options_asset.asset_path.numpy().decode()))


def test_loads_with_tensorflow_alone(export_dir, loaded, tmp_path):
    """TF Hub-style user code in a process that never imports bilm."""
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        elmo = tf.saved_model.load({str(export_dir)!r})
        tokens = elmo.signatures["tokens"](
            tokens=tf.constant([["the", "cat", "is", "on", "the", "mat"],
                                ["dogs", "are", "in", "the", "fog", ""]]),
            sequence_len=tf.constant([6, 5]))
        sentences = elmo.signatures["default"](
            tf.constant(["the cat is on the mat", "dogs are in the fog"]))
        assert "bilm" not in sys.modules
        print(json.dumps({{"tokens": tokens["elmo"].numpy().tolist(),
                          "default": sentences["default"].numpy().tolist(),
                          "shapes": {{k: v.shape.as_list() for k, v in tokens.items()}}}}))
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    fresh = json.loads(result.stdout.strip().splitlines()[-1])
    assert fresh["shapes"] == {"word_emb": [2, 6, PROJ], "lstm_outputs1": [2, 6, 2 * PROJ],
                               "lstm_outputs2": [2, 6, 2 * PROJ], "elmo": [2, 6, 2 * PROJ],
                               "default": [2, 2 * PROJ], "sequence_len": [2]}
    here = loaded.signatures["default"](tf.constant(["the cat is on the mat",
                                                     "dogs are in the fog"]))
    np.testing.assert_allclose(fresh["default"], here["default"].numpy(), atol=1e-6)
    np.testing.assert_allclose(np.array(fresh["tokens"])[1, :5],
                               here["elmo"].numpy()[1, :5], atol=1e-6)


def test_eager_module_matches_graph_model(graph_reference):
    module = ElmoModule(OPTIONS_FILE, WEIGHT_FILE)
    tokens, lengths = _padded(SENTENCES)
    outputs = module.tokens(tokens, lengths)  # Python lists, no session
    differences = _max_differences(outputs, graph_reference["outputs"])
    assert max(differences.values()) < TOLERANCE, differences
    bilm_ops = module.bilm(graph_reference["char_ids"].astype(np.int32))
    np.testing.assert_allclose(bilm_ops["lm_embeddings"].numpy(),
                               graph_reference["lm_embeddings"], atol=TOLERANCE)
    np.testing.assert_array_equal(bilm_ops["mask"].numpy(), graph_reference["mask"])
    # stateless: the same sentence alone gets the same vectors
    alone = module.tokens([SENTENCES[0]], [len(SENTENCES[0])])
    np.testing.assert_allclose(alone["elmo"].numpy()[0], outputs["elmo"].numpy()[0],
                               atol=1e-6)
    assert sorted(v.name for v in module.trainable_variables) == ["elmo/ELMo_W:0",
                                                                  "elmo/ELMo_gamma:0"]


def test_empty_batch_and_bad_lengths(loaded):
    outputs = loaded.signatures["default"](tf.constant(["", "   "]))
    assert outputs["elmo"].shape == (2, 0, 2 * PROJ)
    np.testing.assert_array_equal(outputs["default"].numpy(), 0.0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="sequence_len"):
        loaded.signatures["tokens"](tokens=tf.constant([["a", "b"]]),
                                    sequence_len=tf.constant([3]))


def test_command_line(tmp_path, capsys, monkeypatch):
    args = _build_parser().parse_args(
        ["export", "--options", "o.json", "--weights", "w.hdf5", "out"])
    assert (args.command, args.options, args.weights, args.export_dir) == \
        ("export", "o.json", "w.hdf5", "out")
    # errors exit with status 1 and say what was wrong
    full, out = tmp_path / "full", tmp_path / "out"
    full.mkdir()
    (full / "file").write_text("x")
    assert main(["export", "--options", OPTIONS_FILE, "--weights", WEIGHT_FILE, str(full)]) == 1
    assert capsys.readouterr().err == (f"bilm export: error: {full} exists and is not "
                                       "an empty directory\n")
    missing = tmp_path / "missing.hdf5"
    assert main(["export", "--options", OPTIONS_FILE, "--weights", str(missing), str(out)]) == 1
    assert capsys.readouterr().err == f"bilm export: error: weight file not found: {missing}\n"
    assert main(["export", "--weights", WEIGHT_FILE, str(out)]) == 1
    assert capsys.readouterr().err == ("bilm export: error: give both --options and "
                                       "--weights, or neither for the bundled model\n")
    assert not out.exists()

    # neither --options nor --weights: the bundled model, as `bilm embed`
    exported = []

    def record_export(options_file, weight_file, export_dir):
        exported.append((options_file, weight_file, export_dir))
        os.mkdir(export_dir)

    monkeypatch.setattr("bilm.export.export_saved_model", record_export)
    assert main(["export", str(out)]) == 0
    assert exported == [(OPTIONS_FILE, WEIGHT_FILE, str(out))]
    assert capsys.readouterr().out == f"wrote {out} (0.0 MB)\n"
