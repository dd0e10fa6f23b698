"""ELMo vectors from plain Python: `Embedder` owns its graph and session.

    from bilm.embedder import Embedder
    with Embedder() as embedder:                 # the bundled model
        vectors = embedder.embed_sentence(["The", "cat", "sat", "."])   # [L, 4, D]
        top = embedder.embed_sentences(sentences, layers="top")         # [n_k, D] each
        for k, v in enumerate(embedder.embed_file("corpus.txt")): ...   # streamed

Shapes: L = n_layers + 1 biLM layers (layer 0 the context-free token
embedding, doubled), n tokens of one sentence, D = 2 * projection_dim.

`layers` chooses what each sentence gives:
  'all'      [L, n, D], the layout of `dump_bilm_embeddings`;
  'top'      [n, D], the last LSTM layer;
  'average'  [n, D], the mean of the L layers;
  weights    a sequence of L floats w: gamma * sum_k w[k] * layer_k, [n, D]. The
             floats are used as given (no softmax, unlike `weight_layers`).
Pooling (`sentence_vector`) takes the mean or max over a sentence's real
tokens of that choice: [D] (or [L, D] for 'all'); an empty sentence pools to
zeros.

Stateless (the default here) vs stateful: the original biLM keeps its LSTM
states between runs, so a sentence's vectors depend on what ran before it.
Stateless mode starts every batch from zero states, so sentences can be
batched and sorted by length and each one gets the same vectors whatever its
neighbours (up to float rounding). With `stateless=False` batches run in input
order, never re-sorted, carrying state as the original did; `batch_size=1`
then reproduces the faithful one-sentence-per-run `dump_bilm_embeddings`.
"""
import itertools
import logging
import os
import sys
import time
from typing import (Callable, Dict, Iterator, List, Optional, Sequence,
                    TextIO, Tuple, Union)

import h5py
import numpy as np
import tensorflow.compat.v1 as tf

from .data import Batcher, TokenBatcher, iter_tokenized_lines
from .hub import RELEASES, resolve_model
from .files import atomic_output
from .inference import BidirectionalLanguageModel
from .options import N_CHARACTERS_INFERENCE, load_and_validate, lstm_settings

logger = logging.getLogger(__name__)

Layers = Union[str, Sequence[float]]
LAYER_CHOICES = ("all", "top", "average")
POOLINGS = ("mean", "max")
# Sentences sorted by length together when streaming a file, in batches:
# larger windows give tighter batches, and hold more outputs in memory.
SORT_WINDOW_BATCHES = 8
# When writing hdf5 only token lists wait in a window (outputs go straight
# to the file), so the window can be much larger: this many lines, or 8 batches.
WRITE_WINDOW_LINES = 4096


class Embedder:
    """A pretrained biLM with its own tf.Graph and tf.Session.

    Usable without touching TensorFlow: build it, call the embed methods,
    `close()` it (or use it as a context manager).
    """

    def __init__(self, options_file: Optional[str] = None,
                 weight_file: Optional[str] = None,
                 vocab_file: Optional[str] = None, batch_size: int = 64,
                 stateless: bool = True, max_batch_size: Optional[int] = None,
                 embedding_weight_file: Optional[str] = None, eager: bool = False):
        """
        Args:
          options_file, weight_file: the model (paths or URLs), or a released
            model's name alone (`Embedder("original")`, see `bilm.hub`;
            downloaded once into the cache), or both None for the bundled one.
          vocab_file: vocabulary. A character model only caches the char ids
            of its words (defaults to the bundled vocabulary); token input
            needs the vocabulary of `embedding_weight_file`.
          batch_size: sentences per run (default for every method).
          stateless: zero LSTM states for every batch (batches sorted by
            length); False for the original stateful model (input order).
          max_batch_size: rows of the stateful LSTM state (default
            batch_size); no stateful batch may be larger. Unused when stateless.
          embedding_weight_file: token embeddings (`dump_token_embeddings`):
            use word ids instead of characters (tokens outside the vocabulary
            become <UNK>). Required for a word-input model (no char_cnn).
          eager: run the TF2 function of `bilm.export.ElmoModule` (the one
            SavedModels export) eagerly instead of a tf.compat.v1 session;
            stateless character models only.
        """
        from . import default_model
        options_file, weight_file = resolve_model(options_file, weight_file)
        if (options_file is None) != (weight_file is None):
            raise ValueError("give both options_file and weight_file, a released "
                             f"model's name alone ({', '.join(RELEASES)}), or neither "
                             "for the bundled model")
        if options_file is None:
            options_file, weight_file = default_model.OPTIONS_FILE, default_model.WEIGHT_FILE
        _check_batch_size(batch_size)
        if max_batch_size is None:
            max_batch_size = batch_size
        _check_batch_size(max_batch_size, "max_batch_size")

        options = load_and_validate(options_file)
        use_character_inputs = "char_cnn" in options and embedding_weight_file is None
        if use_character_inputs:
            load_and_validate(options_file, n_characters=N_CHARACTERS_INFERENCE)
            max_chars = options["char_cnn"]["max_characters_per_token"]
            self._batcher = Batcher(vocab_file or default_model.VOCAB_FILE, max_chars)
            ids_shape = (None, None, max_chars)
        else:
            if vocab_file is None:
                raise ValueError("token input (a word-input model or an "
                                 "embedding_weight_file) needs the vocab_file of "
                                 "its token embeddings")
            self._batcher = TokenBatcher(vocab_file)
            ids_shape = (None, None)

        self.batch_size = batch_size
        self.stateless = stateless
        self.max_batch_size = max_batch_size
        self.n_layers = lstm_settings(options)["n_layers"] + 1
        self.dim = 2 * options["lstm"]["projection_dim"]
        self._session = None
        if eager:
            if not (stateless and use_character_inputs):
                raise ValueError("eager=True needs a stateless character model")
            from .export import ElmoModule
            self._module = ElmoModule(options_file, weight_file)
            self._compute = lambda ids: self._module.bilm(
                ids.astype(np.int32))["lm_embeddings"].numpy()
            return
        self._compute = lambda ids: self._run(self._lm_embeddings, {self._ids: ids})
        self._graph = tf.Graph()
        with self._graph.as_default():
            self._ids = tf.placeholder(tf.int64, ids_shape, name="ids")
            model = BidirectionalLanguageModel(
                options_file, weight_file, use_character_inputs=use_character_inputs,
                embedding_weight_file=embedding_weight_file,
                max_batch_size=max_batch_size, stateless=stateless)
            self._lm_embeddings = model(self._ids)["lm_embeddings"]
            state_variables = [v for v in tf.global_variables() if "lstm_state" in v.name]
            self._reset_state_op = tf.variables_initializer(state_variables)
            init_op = tf.global_variables_initializer()
        self._graph.finalize()  # every run reuses this graph; nothing is added
        self._session = tf.Session(
            graph=self._graph, config=tf.ConfigProto(allow_soft_placement=True))
        self._session.run(init_op)

    # -- lifetime ---------------------------------------------------------
    def close(self) -> None:
        """Release the session or module (idempotent)."""
        if self._session is not None:
            self._session.close()
            self._session = None
        self._compute = _closed

    def __enter__(self) -> "Embedder":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def reset_state(self) -> None:
        """Zero the LSTM states of a stateful embedder (no-op when stateless)."""
        if not self.stateless:
            self._run(self._reset_state_op)

    # -- embedding --------------------------------------------------------
    def embed_sentence(self, tokens: Sequence[str], layers: Layers = "all",
                       gamma: float = 1.0) -> np.ndarray:
        """One token list -> float32 [L, n, D] ('all') or [n, D] (see module doc)."""
        return self.embed_sentences([tokens], layers=layers, gamma=gamma)[0]

    def embed_sentences(self, sentences: Sequence[Sequence[str]], layers: Layers = "all",
                        batch_size: Optional[int] = None,
                        gamma: float = 1.0) -> List[np.ndarray]:
        """Token lists -> one float32 array per sentence, in input order.

        Stateless: all sentences are sorted by length and run `batch_size` at
        a time. Stateful: batches in input order.
        """
        sentences = [_check_tokens(tokens, k) for k, tokens in enumerate(sentences)]
        results: List[Optional[np.ndarray]] = [None] * len(sentences)
        window = max(len(sentences), 1)
        for index, vectors, _ in self._embed_stream(iter(sentences), layers, gamma,
                                                    batch_size, window):
            results[index] = vectors
        return results

    def embed_file(self, path: str, layers: Layers = "all",
                   batch_size: Optional[int] = None, gamma: float = 1.0,
                   sort_window: Optional[int] = None) -> Iterator[np.ndarray]:
        """Stream one float32 array per line of a UTF-8 file (tokens split on
        whitespace; an empty line gives 0 tokens), in line order.

        Lines are read `sort_window` at a time (default 8 batches), sorted by
        length within the window, so memory stays flat however long the file.
        """
        _layer_mixer(layers, self.n_layers, gamma)  # bad arguments fail now, not at next()
        if not os.path.isfile(path):
            raise FileNotFoundError(f"input file not found: {path}")
        batch_size = self.batch_size if batch_size is None else batch_size
        _check_batch_size(batch_size)
        window = SORT_WINDOW_BATCHES * batch_size if sort_window is None else sort_window
        _check_batch_size(window, "sort_window")
        stream = self._embed_stream(iter_tokenized_lines(path), layers, gamma,
                                    batch_size, window)
        return _in_input_order(stream)

    def sentence_vector(self, tokens: Sequence[str], pooling: str = "mean",
                        layers: Layers = "average", gamma: float = 1.0) -> np.ndarray:
        """Mean or max over the sentence's tokens: [D] ([L, D] for 'all').

        An empty sentence gives zeros.
        """
        return self.sentence_vectors([tokens], pooling, layers, gamma=gamma)[0]

    def sentence_vectors(self, sentences: Sequence[Sequence[str]], pooling: str = "mean",
                         layers: Layers = "average", batch_size: Optional[int] = None,
                         gamma: float = 1.0) -> np.ndarray:
        """`sentence_vector` of each sentence, stacked: [N, D] ([N, L, D] for 'all')."""
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        embedded = self.embed_sentences(sentences, layers, batch_size, gamma)
        pooled = [pool_tokens(vectors, pooling) for vectors in embedded]
        if not pooled:
            all_layers = isinstance(layers, str) and layers == "all"
            shape = (0, self.n_layers, self.dim) if all_layers else (0, self.dim)
            return np.zeros(shape, np.float32)
        return np.stack(pooled)

    def embed_file_to_hdf5(self, path: str, outfile: str, layers: Layers = "all",
                           batch_size: Optional[int] = None, gamma: float = 1.0,
                           progress: Optional[Callable[[int, int], None]] = None) -> int:
        """Embed every line of `path` into hdf5 `outfile`: dataset str(line
        number) float32 per line (the `dump_bilm_embeddings` layout for 'all').

        Outputs go to the file batch by batch (memory stays flat); the file
        appears at `outfile` only once complete. `progress(sentences, tokens)`
        is called after each batch with running totals. Returns the number of
        lines.
        """
        _layer_mixer(layers, self.n_layers, gamma)  # bad arguments fail before any file
        if not os.path.isfile(path):
            raise FileNotFoundError(f"input file not found: {path}")
        batch_size = self.batch_size if batch_size is None else batch_size
        _check_batch_size(batch_size)
        window = max(WRITE_WINDOW_LINES, SORT_WINDOW_BATCHES * batch_size)
        n_sentences = n_tokens = 0
        with atomic_output(outfile) as tmp_file, h5py.File(tmp_file, "w") as fout:
            for index, vectors, end_of_batch in self._embed_stream(
                    iter_tokenized_lines(path), layers, gamma, batch_size, window):
                fout.create_dataset(str(index), vectors.shape, dtype="float32",
                                    data=vectors)
                n_sentences += 1
                n_tokens += vectors.shape[-2]
                if end_of_batch and progress is not None:
                    progress(n_sentences, n_tokens)
        return n_sentences

    # -- internals --------------------------------------------------------
    def _run(self, fetch, feed_dict=None):
        if self._session is None:
            raise RuntimeError("this Embedder is closed")
        return self._session.run(fetch, feed_dict=feed_dict)

    def _embed_stream(self, sentences: Iterator[List[str]], layers: Layers, gamma: float,
                      batch_size: Optional[int], window: int
                      ) -> Iterator[Tuple[int, np.ndarray, bool]]:
        """Yield (input index, vectors, last of its batch) as batches finish.

        Stateless: `window` sentences at a time are sorted by length and cut
        into batches. Stateful: batches in input order.
        """
        mix = _layer_mixer(layers, self.n_layers, gamma)
        batch_size = self.batch_size if batch_size is None else batch_size
        _check_batch_size(batch_size)
        if not self.stateless:
            if batch_size > self.max_batch_size:
                raise ValueError(f"a stateful batch of {batch_size} is larger than "
                                 f"max_batch_size={self.max_batch_size}")
            window = batch_size
        start = 0
        while True:
            chunk = list(itertools.islice(sentences, window))
            if not chunk:
                return
            if self.stateless:
                order = sorted(range(len(chunk)), key=lambda k: len(chunk[k]))
            else:
                order = list(range(len(chunk)))
            for batch_start in range(0, len(order), batch_size):
                batch = order[batch_start:batch_start + batch_size]
                ids = self._batcher.batch_sentences([chunk[k] for k in batch])
                mixed = mix(self._compute(ids))
                for row, k in enumerate(batch):
                    # a copy, so that no output keeps the whole batch alive
                    vectors = mixed[row][..., :len(chunk[k]), :].copy()
                    yield start + k, vectors, row == len(batch) - 1
            start += len(chunk)


def _closed(ids):
    raise RuntimeError("this Embedder is closed")


def _in_input_order(stream: Iterator[Tuple[int, np.ndarray, bool]]) -> Iterator[np.ndarray]:
    """Re-order (index, vectors, _) items that are complete per window."""
    waiting: Dict[int, np.ndarray] = {}
    next_index = 0
    for index, vectors, _ in stream:
        waiting[index] = vectors
        while next_index in waiting:
            yield waiting.pop(next_index)
            next_index += 1


def pool_tokens(vectors: np.ndarray, pooling: str = "mean") -> np.ndarray:
    """Mean or max over the token axis (-2) of [n, D] or [L, n, D]; zeros if n = 0."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if vectors.shape[-2] == 0:
        return np.zeros(vectors.shape[:-2] + vectors.shape[-1:], np.float32)
    if pooling == "mean":
        return vectors.mean(axis=-2, dtype=np.float32)
    return vectors.max(axis=-2)


def _layer_mixer(layers: Layers, n_layers: int, gamma: float
                 ) -> Callable[[np.ndarray], np.ndarray]:
    """Check `layers`; return a function of lm_embeddings [B, L, T, D] ->
    [B, L, T, D] ('all') or [B, T, D]."""
    if isinstance(layers, str):
        if layers not in LAYER_CHOICES:
            raise ValueError(f"layers must be one of {LAYER_CHOICES} or a sequence "
                             f"of {n_layers} weights, got {layers!r}")
        if gamma != 1.0:
            raise ValueError("gamma scales a weighted mix of layers; give layers "
                             "as a sequence of weights to use it")
        if layers == "all":
            return lambda lm: lm
        if layers == "top":
            return lambda lm: lm[:, -1]
        return lambda lm: lm.mean(axis=1, dtype=np.float32)
    weights = np.asarray(layers, dtype=np.float32)
    if weights.shape != (n_layers,) or not np.all(np.isfinite(weights)):
        raise ValueError(f"layer weights must be {n_layers} finite floats (one per "
                         f"layer, token embedding first), got {list(layers)!r}")
    weights = weights * np.float32(gamma)
    return lambda lm: np.einsum("l,bltd->btd", weights, lm)


def _check_batch_size(batch_size, name: str = "batch_size") -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{name} must be a positive int, got {batch_size!r}")


def _check_tokens(tokens: Sequence[str], k: int) -> List[str]:
    if isinstance(tokens, str):
        raise TypeError(f"sentence {k} is a string ({tokens[:40]!r}); give a list "
                        "of tokens, e.g. text.split()")
    return list(tokens)


# -- files and progress ---------------------------------------------------
def count_lines(path: str, chunk_bytes: int = 1 << 20) -> int:
    """Lines of a file as `iter_tokenized_lines` sees them (a last line
    without a newline counts), by a binary scan."""
    n_lines = 0
    last = b"\n"
    with open(path, "rb") as fin:
        while True:
            chunk = fin.read(chunk_bytes)
            if not chunk:
                break
            n_lines += chunk.count(b"\n")
            last = chunk[-1:]
    return n_lines + (last != b"\n")


class Progress:
    """Count, rate (sentences/s, tokens/s) and ETA of a long loop.

    On a terminal the line is redrawn in place a few times a second; otherwise
    (a log, a pipe) a full line is written every `interval` seconds and at the end.
    """

    def __init__(self, total: Optional[int] = None, stream: Optional[TextIO] = None,
                 write: Optional[Callable[[str], None]] = None,
                 interval: Optional[float] = None):
        stream = stream if stream is not None else sys.stderr
        self.total = total
        self._tty = write is None and hasattr(stream, "isatty") and stream.isatty()
        self._write = write or (lambda line: (stream.write(line), stream.flush()))
        self._line_end = "" if self._tty else "\n"
        self._interval = interval if interval is not None else (0.2 if self._tty else 10.0)
        self._start = self._last = time.perf_counter()
        self._sentences = self._tokens = 0

    def __call__(self, sentences: int, tokens: int) -> None:
        self._sentences, self._tokens = sentences, tokens
        now = time.perf_counter()
        if now - self._last >= self._interval:
            self._last = now
            self._show(now)

    def close(self) -> None:
        """Write the final line."""
        self._show(time.perf_counter())
        if self._tty:
            self._write("\n")

    def _show(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = self._sentences / elapsed
        parts = [f"{self._sentences:,}" + (f"/{self.total:,}" if self.total else "")
                 + " sentences"]
        if self.total:
            parts.append(f"{100.0 * self._sentences / self.total:.0f}%")
        parts.append(f"{rate:,.1f} sentences/s")
        parts.append(f"{self._tokens / elapsed:,.0f} tokens/s")
        parts.append(f"elapsed {_clock(elapsed)}")
        if self.total and rate > 0 and self._sentences < self.total:
            parts.append(f"ETA {_clock((self.total - self._sentences) / rate)}")
        prefix = "\r\x1b[K" if self._tty else ""
        self._write(prefix + "  ".join(parts) + self._line_end)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
