"""Embedder (bilm/embedder.py) and the batched dumps, on the bundled model.

The reference for every batched result is the plain BidirectionalLanguageModel
run one sentence at a time from zero LSTM state.
"""
import h5py
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from bilm import (Batcher, BidirectionalLanguageModel, dump_bilm_embeddings,
                  dump_token_embeddings)
from bilm.data import Vocabulary
from bilm.default_model import OPTIONS_FILE, VOCAB_FILE, WEIGHT_FILE
from bundled import DIM, N_LAYERS, PROJ
from bilm.embedder import Embedder, count_lines, pool_tokens


LONG_WORD = "Pneumonoultramicroscopicsilicovolcanoconiosis" * 2  # > 50 characters
SENTENCES = [
    "The bank raised its interest rates again this year .".split(),
    [],
    ["naïve", "café", "日本語", "テキスト", "🙂", "Ωμέγα", LONG_WORD],
    ["."],
    ("We sat on the bank of the river and watched the water . " * 8).split(),
    "She will play the lead role".split(),
    ["a", "b"],
    [],
    ("They give state of the art performance for many tasks " * 3).split(),
]


def reference_embeddings(sentences, stateful=False):
    """[L, n, D] of each sentence, one run per sentence, with the raw model;
    LSTM states zeroed before every sentence unless `stateful`."""
    batcher = Batcher(VOCAB_FILE, 50)
    with tf.Graph().as_default():
        ids = tf.placeholder("int32", (None, None, 50))
        model = BidirectionalLanguageModel(OPTIONS_FILE, WEIGHT_FILE, max_batch_size=1)
        lm_embeddings = model(ids)["lm_embeddings"]
        reset_states = tf.variables_initializer(
            [v for v in tf.global_variables() if "lstm_state" in v.name])
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            results = []
            for tokens in sentences:
                if not stateful:
                    sess.run(reset_states)
                results.append(sess.run(lm_embeddings,
                                        {ids: batcher.batch_sentences([tokens])})[0])
    return results


@pytest.fixture(scope="module")
def reference():
    return reference_embeddings(SENTENCES)


@pytest.fixture(scope="module")
def embedder():
    with Embedder(batch_size=4) as instance:
        yield instance


def test_batched_stateless_matches_one_at_a_time(embedder, reference):
    # batch_size 4: sentences are sorted by length and split over 3 batches
    batched = embedder.embed_sentences(SENTENCES)
    assert len(batched) == len(SENTENCES)
    for tokens, actual, expected in zip(SENTENCES, batched, reference):
        assert actual.shape == (N_LAYERS, len(tokens), DIM) == expected.shape
        assert actual.dtype == np.float32
        np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=0)
    # a whole batch of empty sentences, and one big batch
    assert embedder.embed_sentences([[], []], batch_size=2)[1].shape == (N_LAYERS, 0, DIM)
    for actual, expected in zip(embedder.embed_sentences(SENTENCES, batch_size=64),
                                reference):
        np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=0)


def test_embed_sentence_and_order(embedder, reference):
    np.testing.assert_allclose(embedder.embed_sentence(SENTENCES[2]), reference[2],
                               atol=1e-5, rtol=0)
    rng = np.random.default_rng(0)
    shuffled = [SENTENCES[k] for k in rng.permutation(len(SENTENCES))] * 3
    single = {tuple(s): v for s, v in zip(SENTENCES, reference)}
    for tokens, actual in zip(shuffled, embedder.embed_sentences(shuffled, batch_size=3)):
        np.testing.assert_allclose(actual, single[tuple(tokens)], atol=1e-5, rtol=0)
    assert embedder.embed_sentences([]) == []


def test_layer_choices(embedder):
    all_layers = embedder.embed_sentences(SENTENCES)
    top = embedder.embed_sentences(SENTENCES, layers="top")
    average = embedder.embed_sentences(SENTENCES, layers="average")
    weights = [0.5, -0.25, 2.0]
    mixed = embedder.embed_sentences(SENTENCES, layers=weights, gamma=1.5)
    for k, tokens in enumerate(SENTENCES):
        for actual in (top[k], average[k], mixed[k]):
            assert actual.shape == (len(tokens), DIM) and actual.dtype == np.float32
        np.testing.assert_array_equal(top[k], all_layers[k][-1])
        np.testing.assert_allclose(average[k], all_layers[k].mean(axis=0), atol=1e-6)
        expected = 1.5 * np.tensordot(np.array(weights), all_layers[k], axes=1)
        np.testing.assert_allclose(mixed[k], expected, atol=1e-5)
    np.testing.assert_allclose(embedder.embed_sentence(SENTENCES[0], layers=(0, 0, 1)),
                               top[0], atol=1e-6)


def test_bad_layer_arguments(embedder):
    with pytest.raises(ValueError, match="3 finite floats"):
        embedder.embed_sentence(["a"], layers=[0.5, 0.5])
    with pytest.raises(ValueError, match="one of"):
        embedder.embed_sentence(["a"], layers="bottom")
    with pytest.raises(ValueError, match="gamma"):
        embedder.embed_sentence(["a"], layers="top", gamma=2.0)
    with pytest.raises(ValueError, match="pooling"):
        embedder.sentence_vector(["a"], pooling="sum")
    with pytest.raises(TypeError, match="list of tokens"):
        embedder.embed_sentence("a whole string")
    with pytest.raises(ValueError, match="batch_size"):
        embedder.embed_sentences([["a"]], batch_size=0)


def test_pooling(embedder):
    for layers in ("average", "top", "all", [0.2, 0.3, 0.5]):
        embedded = embedder.embed_sentences(SENTENCES, layers=layers)
        for pooling, reduce in (("mean", np.mean), ("max", np.max)):
            vectors = embedder.sentence_vectors(SENTENCES, pooling=pooling, layers=layers)
            expected_shape = (N_LAYERS, DIM) if layers == "all" else (DIM,)
            assert vectors.shape == (len(SENTENCES),) + expected_shape
            for k, tokens in enumerate(SENTENCES):
                if tokens:
                    expected = reduce(embedded[k], axis=-2)
                else:  # documented: an empty sentence pools to zeros
                    expected = np.zeros(expected_shape, np.float32)
                np.testing.assert_allclose(vectors[k], expected, atol=1e-6)
    single = embedder.sentence_vector(SENTENCES[0], pooling="max", layers="top")
    np.testing.assert_allclose(single, embedder.embed_sentence(SENTENCES[0], "top").max(0),
                               atol=1e-6)
    assert embedder.sentence_vector([]).shape == (DIM,)
    assert embedder.sentence_vectors([]).shape == (0, DIM)
    np.testing.assert_array_equal(pool_tokens(np.ones((2, 3), np.float32), "max"), [1, 1, 1])


def test_embed_file_streams_in_line_order(embedder, reference, tmp_path):
    path = tmp_path / "sentences.txt"
    # the last line has no newline; blank lines and extra spaces
    path.write_text("\n".join("  ".join(tokens) for tokens in SENTENCES), encoding="utf-8")
    assert count_lines(str(path)) == len(SENTENCES)
    stream = embedder.embed_file(str(path), sort_window=3, batch_size=2)
    assert iter(stream) is stream  # a generator, not a list
    results = list(stream)
    assert len(results) == len(SENTENCES)
    for actual, expected in zip(results, reference):
        np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=0)
    top = list(embedder.embed_file(str(path), layers="top"))
    for actual, expected in zip(top, reference):
        np.testing.assert_allclose(actual, expected[-1], atol=1e-5, rtol=0)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert list(embedder.embed_file(str(empty))) == [] and count_lines(str(empty)) == 0
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        embedder.embed_file(str(tmp_path / "missing.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nbad \xff byte\n")
    with pytest.raises(ValueError, match="line 2: not valid UTF-8"):
        list(embedder.embed_file(str(bad)))


def test_stateful_mode_is_the_original(reference):
    stateful_reference = reference_embeddings(SENTENCES, stateful=True)
    with Embedder(stateless=False, batch_size=1) as embedder:
        for actual, expected in zip(embedder.embed_sentences(SENTENCES), stateful_reference):
            np.testing.assert_array_equal(actual, expected)
        drift = np.abs(stateful_reference[5] - reference[5]).max()
        assert drift > 1e-3, "state must carry between sentences"
        embedder.reset_state()
        np.testing.assert_allclose(embedder.embed_sentence(SENTENCES[0]), reference[0],
                                   atol=1e-6)
        with pytest.raises(ValueError, match="max_batch_size=1"):
            embedder.embed_sentences(SENTENCES, batch_size=2)


def test_own_graph_and_close():
    default_graph = tf.get_default_graph()
    n_ops = len(default_graph.get_operations())
    with Embedder(OPTIONS_FILE, WEIGHT_FILE, VOCAB_FILE) as embedder:
        assert embedder.embed_sentence(["a"], layers="top").shape == (1, DIM)
    assert len(default_graph.get_operations()) == n_ops
    with pytest.raises(RuntimeError, match="closed"):
        embedder.embed_sentence(["a"])
    embedder.close()  # idempotent
    with pytest.raises(ValueError, match="both options_file and weight_file"):
        Embedder(options_file=OPTIONS_FILE)
    with pytest.raises(FileNotFoundError, match="nope.hdf5"):
        Embedder(OPTIONS_FILE, "nope.hdf5")


def _read_hdf5(path):
    with h5py.File(path, "r") as fin:
        return {key: fin[key][...] for key in fin}


def test_token_dump_batched_equals_one_by_one(tmp_path):
    one_by_one, batched = str(tmp_path / "one.hdf5"), str(tmp_path / "batched.hdf5")
    in_vocabulary = [SENTENCES[0], SENTENCES[5], [], ["bank", "?"]]
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("\n".join(["<S>", "</S>", "<UNK>"] + sorted(
        {t for s in in_vocabulary for t in s})), encoding="utf-8")
    vocab_file = str(vocab_file)
    dump_token_embeddings(vocab_file, OPTIONS_FILE, WEIGHT_FILE, one_by_one)
    dump_token_embeddings(vocab_file, OPTIONS_FILE, WEIGHT_FILE, batched, batch_size=4)
    expected, actual = _read_hdf5(one_by_one), _read_hdf5(batched)
    assert list(actual) == list(expected) == ["embedding"]
    assert actual["embedding"].shape == (Vocabulary(vocab_file).size, PROJ)
    assert actual["embedding"].dtype == expected["embedding"].dtype == np.float32
    np.testing.assert_allclose(actual["embedding"], expected["embedding"], atol=1e-6, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batched.hdf5", "one.hdf5",
                                                          "vocab.txt"]

    # token input from the dumped embeddings = character input, for vocabulary words
    with Embedder(vocab_file=vocab_file, embedding_weight_file=batched) as by_token, \
            Embedder() as by_chars:
        for actual, expected in zip(by_token.embed_sentences(in_vocabulary),
                                    by_chars.embed_sentences(in_vocabulary)):
            np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="vocab_file"):
        Embedder(embedding_weight_file=batched)


def test_bilm_dump_batched(tmp_path, reference):
    dataset = tmp_path / "dataset.txt"
    dataset.write_text("".join(" ".join(tokens) + "\n" for tokens in SENTENCES),
                       encoding="utf-8")
    paths = {name: str(tmp_path / f"{name}.hdf5")
             for name in ("faithful", "stateless", "batched")}
    args = (VOCAB_FILE, str(dataset), OPTIONS_FILE, WEIGHT_FILE)
    dump_bilm_embeddings(*args, paths["faithful"])
    dump_bilm_embeddings(*args, paths["stateless"], stateless=True)
    dump_bilm_embeddings(*args, paths["batched"], batch_size=3)
    dumps = {name: _read_hdf5(path) for name, path in paths.items()}
    keys = [str(k) for k in range(len(SENTENCES))]
    for dump in dumps.values():
        assert sorted(dump) == sorted(keys)
        for key, tokens in zip(keys, SENTENCES):
            assert dump[key].shape == (N_LAYERS, len(tokens), DIM)
            assert dump[key].dtype == np.float32
    # the default stays the faithful stateful one-sentence-per-run path
    for key, expected in zip(keys, reference_embeddings(SENTENCES, stateful=True)):
        np.testing.assert_array_equal(dumps["faithful"][key], expected)
    # `reference` runs the stateful graph (TF1's gate order) reset before each
    # sentence; the stateless graph hoists the input product: rounding only
    for key, expected in zip(keys, reference):
        np.testing.assert_allclose(dumps["stateless"][key], expected, atol=1e-5, rtol=0)
        np.testing.assert_allclose(dumps["batched"][key], dumps["stateless"][key],
                                   atol=1e-5, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "batched.hdf5", "dataset.txt", "faithful.hdf5", "stateless.hdf5"]


def test_eager_embedder_matches_the_session_one():
    sentences = [["The", "bank", "closed", "."], [], ["日本", "x" * 60, "é"]]
    with Embedder() as graph_embedder:
        expected = graph_embedder.embed_sentences(sentences)
    with Embedder(eager=True) as eager_embedder:
        actual = eager_embedder.embed_sentences(sentences)
        assert eager_embedder.sentence_vector(sentences[0]).shape == (DIM,)
    for a, b in zip(actual, expected):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(RuntimeError, match="closed"):
        eager_embedder.embed_sentence(["a"])
    with pytest.raises(ValueError, match="stateless"):
        Embedder(eager=True, stateless=False)
