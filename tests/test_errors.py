"""Bad input to the inference side gets errors that name what was wrong."""
import json
import os

import h5py
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from bilm import (Batcher, BidirectionalLanguageModel, InvalidNumberOfCharacters,
                  dump_bilm_embeddings, dump_token_embeddings)
from bundled import DIM, LSTM_DIM, PROJ, write_small_vocab
from bilm.default_model import OPTIONS_FILE, VOCAB_FILE, WEIGHT_FILE
from bilm.options import OptionsError
from bilm.weights import WeightFileError


def _options():
    with open(OPTIONS_FILE, encoding="utf-8") as fin:
        return json.load(fin)


def _write_options(tmp_path, options, name="options.json"):
    path = tmp_path / name
    path.write_text(json.dumps(options), encoding="utf-8")
    return str(path)


def _build(options_file=OPTIONS_FILE, weight_file=WEIGHT_FILE, ids_shape=(None, None, 50),
           ids_dtype="int32", **kwargs):
    with tf.Graph().as_default():
        ids = tf.placeholder(ids_dtype, ids_shape)
        return BidirectionalLanguageModel(options_file, weight_file, **kwargs)(ids)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        _build(options_file=str(tmp_path / "nope.json"))
    with pytest.raises(FileNotFoundError, match="nope.hdf5"):
        _build(weight_file=str(tmp_path / "nope.hdf5"))
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        Batcher(str(tmp_path / "nope.txt"), 50)


def test_unreadable_files_are_named(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json", encoding="utf-8")
    with pytest.raises(OptionsError, match="bad.json"):
        _build(options_file=str(bad_json))
    bad_hdf5 = tmp_path / "bad.hdf5"
    bad_hdf5.write_bytes(b"not an hdf5 file")
    with pytest.raises(WeightFileError, match="bad.hdf5"):
        _build(weight_file=str(bad_hdf5))


@pytest.mark.parametrize("section,key", [("lstm", "dim"), ("lstm", "use_skip_connections"),
                                         ("char_cnn", "filters"),
                                         ("char_cnn", "max_characters_per_token")])
def test_missing_option_key(tmp_path, section, key):
    options = _options()
    del options[section][key]
    with pytest.raises(OptionsError, match=f"missing required key '{section}.{key}'"):
        _build(options_file=_write_options(tmp_path, options))


@pytest.mark.parametrize("section,key,value", [("lstm", "dim", "256"),
                                               ("lstm", "n_layers", 1.5),
                                               ("lstm", "cell_clip", "3"),
                                               ("char_cnn", "activation", "gelu"),
                                               ("char_cnn", "filters", [[1, "a"]])])
def test_option_of_wrong_type(tmp_path, section, key, value):
    options = _options()
    options[section][key] = value
    with pytest.raises(OptionsError, match=f"{section}.{key}"):
        _build(options_file=_write_options(tmp_path, options))


def test_training_character_count_at_inference(tmp_path):
    options = _options()
    options["char_cnn"]["n_characters"] = 261
    with pytest.raises(InvalidNumberOfCharacters, match="262"):
        _build(options_file=_write_options(tmp_path, options))


def test_weight_file_missing_dataset(tmp_path):
    weight_file = tmp_path / "weights.hdf5"
    with h5py.File(WEIGHT_FILE, "r") as fin, h5py.File(weight_file, "w") as fout:
        for name in ("char_embed", "CNN/W_cnn_0"):
            fout.create_dataset(name, data=fin[name][...])
    with pytest.raises(WeightFileError, match="missing dataset 'CNN/b_cnn_0'"):
        _build(weight_file=str(weight_file))


def test_weight_file_wrong_shape(tmp_path):
    options = _options()
    options["lstm"]["dim"] = 2 * LSTM_DIM  # the file was written for LSTM_DIM
    with pytest.raises(WeightFileError,
                       match=rf"LSTMCell/W_0' has shape \({2 * PROJ}, {4 * LSTM_DIM}\) but "
                             rf"options.json requires \({2 * PROJ}, {8 * LSTM_DIM}\)"):
        _build(options_file=_write_options(tmp_path, options))


def test_placeholder_rank_and_dtype(tmp_path):
    with pytest.raises(ValueError, match="rank 2"):
        _build(ids_shape=(None, None))
    with pytest.raises(ValueError, match="40 characters per token"):
        _build(ids_shape=(None, None, 40))
    with pytest.raises(TypeError, match="float32"):
        _build(ids_dtype="float32")
    embedding_file = tmp_path / "embedding.hdf5"
    with h5py.File(embedding_file, "w") as fout:
        fout.create_dataset("embedding", data=np.zeros((5, PROJ), np.float32))
    with pytest.raises(ValueError, match="rank 3"):
        _build(ids_shape=(None, None, 50), use_character_inputs=False,
               embedding_weight_file=str(embedding_file))


def test_token_input_without_embeddings():
    with pytest.raises(WeightFileError, match="missing dataset 'embedding'"):
        _build(ids_shape=(None, None), use_character_inputs=False)


def test_batch_larger_than_max_batch_size():
    batcher = Batcher(VOCAB_FILE, 50)
    with tf.Graph().as_default():
        ids = tf.placeholder("int32", (None, None, 50))
        ops = BidirectionalLanguageModel(OPTIONS_FILE, WEIGHT_FILE, max_batch_size=2)(ids)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            with pytest.raises(tf.errors.InvalidArgumentError, match="max_batch_size=2"):
                sess.run(ops["lm_embeddings"],
                         {ids: batcher.batch_sentences([["a"], ["b"], ["c"]])})


def test_empty_batch_and_empty_sentence():
    batcher = Batcher(VOCAB_FILE, 50)
    with pytest.raises(ValueError, match="at least one sentence"):
        batcher.batch_sentences([])
    with tf.Graph().as_default():
        ids = tf.placeholder("int32", (None, None, 50))
        ops = BidirectionalLanguageModel(OPTIONS_FILE, WEIGHT_FILE)(ids)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            out = sess.run(ops, {ids: batcher.batch_sentences([[], ["the", "bank"]])})
    assert list(out["lengths"]) == [0, 2]
    assert out["lm_embeddings"].shape == (2, 3, 2, DIM)
    assert not out["mask"][0].any() and out["mask"][1].all()
    # LSTM layers are zero past a sentence's length (layer 0 holds the
    # padding's token embedding there, as in the original; `mask` says which)
    assert np.all(out["lm_embeddings"][0, 1:] == 0.0)


def test_long_tokens_are_truncated():
    """Tokens keep their first 50 - 2 = 48 UTF-8 bytes, exactly."""
    batcher = Batcher(VOCAB_FILE, 50)
    ids = batcher.batch_sentences([["x" * 60], ["x" * 48], ["x" * 47], ["é" * 30]])
    bow, eow = 258 + 1, 259 + 1  # ids are shifted by 1 for inference
    np.testing.assert_array_equal(ids[0, 1], [bow] + [ord("x") + 1] * 48 + [eow])
    np.testing.assert_array_equal(ids[0], ids[1])
    assert not np.array_equal(ids[1], ids[2])  # the 48th byte is kept
    np.testing.assert_array_equal(ids[3, 1], [bow] + [0xC3 + 1, 0xA9 + 1] * 24 + [eow])
    with tf.Graph().as_default():
        placeholder = tf.placeholder("int32", (None, None, 50))
        ops = BidirectionalLanguageModel(OPTIONS_FILE, WEIGHT_FILE)(placeholder)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            out = sess.run(ops["token_embeddings"], {placeholder: ids})
    np.testing.assert_array_equal(out[0], out[1])
    assert np.abs(out[1, 1] - out[2, 1]).max() > 1e-4


def test_invalid_utf8_dataset_names_line(tmp_path):
    dataset = tmp_path / "data.txt"
    dataset.write_bytes(b"good line\nbad \xff line\n")
    outfile = tmp_path / "out.hdf5"
    with pytest.raises(ValueError, match=r"data.txt, line 2: not valid UTF-8"):
        dump_bilm_embeddings(VOCAB_FILE, str(dataset), OPTIONS_FILE, WEIGHT_FILE,
                             str(outfile))
    assert not outfile.exists()
    assert os.listdir(tmp_path) == ["data.txt"]


def test_interrupted_dump_leaves_no_output(tmp_path, monkeypatch):
    dataset = tmp_path / "data.txt"
    dataset.write_text("a b\nc d\ne f\n", encoding="utf-8")
    outfile = tmp_path / "out.hdf5"
    calls = []
    original = Batcher.batch_sentences

    def interrupt_on_third(self, sentences):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, sentences)

    monkeypatch.setattr(Batcher, "batch_sentences", interrupt_on_third)
    with pytest.raises(KeyboardInterrupt):
        dump_bilm_embeddings(VOCAB_FILE, str(dataset), OPTIONS_FILE, WEIGHT_FILE,
                             str(outfile))
    assert sorted(os.listdir(tmp_path)) == ["data.txt"]


def test_dump_layouts(tmp_path):
    dataset = tmp_path / "data.txt"
    dataset.write_text("The bank .\n\nWe sat on the bank\n", encoding="utf-8")
    outfile = tmp_path / "out.hdf5"
    dump_bilm_embeddings(VOCAB_FILE, str(dataset), OPTIONS_FILE, WEIGHT_FILE, str(outfile))
    with h5py.File(outfile, "r") as fin:
        assert sorted(fin) == ["0", "1", "2"]
        assert fin["0"].shape == (3, 3, DIM) and fin["0"].dtype == np.float32
        assert fin["1"].shape == (3, 0, DIM)
        assert fin["2"].shape == (3, 5, DIM)
    token_file = tmp_path / "tokens.hdf5"
    vocab_file = write_small_vocab(tmp_path / "vocab.txt")
    dump_token_embeddings(vocab_file, OPTIONS_FILE, WEIGHT_FILE, str(token_file))
    with open(vocab_file, encoding="utf-8") as fin:
        n_words = len(fin.read().split())
    with h5py.File(token_file, "r") as fin:
        assert list(fin) == ["embedding"]
        assert fin["embedding"].shape == (n_words, PROJ)
