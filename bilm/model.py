"""The pretrained biLM for inference, and the embedding dumps.

The public home of the original library's names: `BidirectionalLanguageModel`
(the graph, built in `bilm.inference`), `dump_token_embeddings` and
`dump_bilm_embeddings` (the latter runs on `bilm.embedder.Embedder`).
"""
import logging
import os
from typing import Optional

import h5py
import numpy as np
import tensorflow.compat.v1 as tf

from .data import Batcher, UnicodeCharsVocabulary
from .embedder import Embedder, Progress, count_lines
from .files import atomic_output
from .inference import BidirectionalLanguageModel, BidirectionalLanguageModelGraph
from .options import N_CHARACTERS_INFERENCE, load_and_validate

__all__ = ["BidirectionalLanguageModel", "BidirectionalLanguageModelGraph",
           "dump_token_embeddings", "dump_bilm_embeddings"]

logger = logging.getLogger(__name__)

# Rows of the token embedding computed before each write to the hdf5 file.
_TOKEN_ROWS_PER_WRITE = 4096


def dump_token_embeddings(vocab_file: str, options_file: str, weight_file: str,
                          outfile: str, batch_size: Optional[int] = None) -> None:
    """Write the context-free token embedding of every vocabulary word.

    Output hdf5: dataset 'embedding' float32 [vocab size, proj], row k for
    word k of `vocab_file` (no padding row), for use with
    `BidirectionalLanguageModel(..., use_character_inputs=False)`.

    By default one word per run, as the original. With `batch_size`, that
    many words per run (the char CNN sees each word alone either way, so the
    values agree to float rounding). Rows are written as they are computed.
    """
    if batch_size is not None and (isinstance(batch_size, bool)
                                   or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    options = load_and_validate(options_file, n_characters=N_CHARACTERS_INFERENCE)
    max_word_length = options["char_cnn"]["max_characters_per_token"]
    vocab = UnicodeCharsVocabulary(vocab_file, max_word_length)
    batcher = Batcher(vocab_file, max_word_length)
    words_per_run = batch_size or 1
    words_per_write = words_per_run * max(1, _TOKEN_ROWS_PER_WRITE // words_per_run)
    with tf.Graph().as_default() as graph:
        ids_placeholder = tf.placeholder("int32", shape=(None, None, max_word_length))
        model = BidirectionalLanguageModel(options_file, weight_file)
        embedding_op = model(ids_placeholder)["token_embeddings"]
        init_op = tf.global_variables_initializer()
    graph.finalize()
    with tf.Session(graph=graph, config=tf.ConfigProto(allow_soft_placement=True)) as sess, \
            atomic_output(outfile) as tmp_file, h5py.File(tmp_file, "w") as fout:
        sess.run(init_op)
        out = fout.create_dataset("embedding", (vocab.size, int(embedding_op.shape[2])),
                                  dtype="float32")
        for write_start in range(0, vocab.size, words_per_write):
            write_end = min(write_start + words_per_write, vocab.size)
            rows = np.zeros((write_end - write_start, out.shape[1]), np.float32)
            for start in range(write_start, write_end, words_per_run):
                words = [[vocab.id_to_word(k)]
                         for k in range(start, min(start + words_per_run, write_end))]
                # each word alone, without <S> and </S>: [n_words, 1, max_chars]
                char_ids = batcher.batch_sentences(words)[:, 1:2]
                rows[start - write_start:start - write_start + len(words)] = sess.run(
                    embedding_op, feed_dict={ids_placeholder: char_ids})[:, 0]
            out[write_start:write_end] = rows


def dump_bilm_embeddings(vocab_file: str, dataset_file: str, options_file: str,
                         weight_file: str, outfile: str, batch_size: Optional[int] = None,
                         stateless: bool = False) -> None:
    """Embed every line of `dataset_file` (tokens split on whitespace).

    Output hdf5: dataset str(line number) float32 [n_layers + 1, n_tokens,
    2 * proj] per line. An empty line gives [n_layers + 1, 0, 2 * proj] so
    that keys stay line numbers. The file appears under its name only once
    complete.

    By default (batch_size None) sentences run one at a time, in order,
    through the stateful model, as the original did (`stateless=True`: each
    from zero states). With `batch_size`, batching implies stateless: lines
    are sorted by length within bounded windows and run `batch_size` at a
    time, every batch from zero LSTM states, so each sentence gets the vectors
    it gets alone from zero state (not the stateful ones). Keys, shapes and
    dtype are those of the default; memory stays flat (outputs are written
    batch by batch).
    """
    if batch_size is None:
        embedder_args = dict(batch_size=1, stateless=stateless)
    else:
        if not stateless:
            logger.info("batch_size=%d: sentences run batched from zero LSTM states "
                        "(batching implies stateless)", batch_size)
        embedder_args = dict(batch_size=batch_size, stateless=True)
    total = count_lines(dataset_file) if os.path.isfile(dataset_file) else None
    progress = Progress(total, write=logger.info, interval=30.0)
    with Embedder(options_file, weight_file, vocab_file, **embedder_args) as embedder:
        embedder.embed_file_to_hdf5(dataset_file, outfile, layers="all", progress=progress)
    progress.close()
