"""Train and evaluate the biLM, and turn checkpoints into inference weights.

`train` builds one `LanguageModel` per tower (`/gpu:k`, variables shared
under the scope `lm`), averages the towers' gradients, clips them by global
norm and applies Adagrad. `test` reports the perplexity of a checkpoint.
`dump_weights` writes the hdf5 file that `BidirectionalLanguageModel` reads.
Given a `bilm.cluster.Cluster`, `train` runs one worker of a synchronous
between-graph-replicated cluster instead (same graph per worker, variables
on ps tasks, the same checkpoints).

The graph reuses the network pieces of `layers.py` (the same char CNN,
highway, projection and LSTM code as the inference graph), under the variable
names of the original TF1 library (SPEC §1), so checkpoints written by the
original restore here and the other way round:

  lm/char_embed | lm/embedding, lm/CNN/..., lm/CNN_high_{i}/..., lm/CNN_proj/...,
  lm/RNN_{d}/rnn/multi_rnn_cell/cell_{l}/lstm_cell/{kernel,bias,projection/kernel}
  (RNN_{d} only when bidirectional, multi_rnn_cell/cell_{l} only when
  n_layers > 1), lm/softmax/{W,b}, global_step, train_perplexity and the
  Adagrad slot <name>/Adagrad of every trainable variable.

Checkpoints of TF < 1.2 named the LSTM cell's variables `weights`/`biases`;
every restore here accepts those names too.

Characters: training uses the char ids of `UnicodeCharsVocabulary` unshifted
(n_characters = 261). Inference shifts ids by +1 and prepends an all-zero
row to `char_embed` (n_characters = 262); `dump_weights` can write that
inference options.json next to the weights.
"""
import copy
import datetime
import json
import logging
import os
import re
import time
from contextlib import ExitStack
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import h5py
import numpy as np
import tensorflow.compat.v1 as tf

from .cluster import (STOP_TOKEN, Cluster, ClusterRun, SyncReplicas, start_server,
                      worker_shards)
from .data import (BidirectionalLMDataset, LMDataset, UnicodeCharsVocabulary,
                   Vocabulary)
from .layers import DTYPE, char_cnn, create_char_cnn_weights, create_lstm_weights, run_lstm
from .options import (N_CHARACTERS_INFERENCE, N_CHARACTERS_TRAINING, OptionsError,
                      _get, load_options, lstm_output_dim, lstm_settings,
                      validate_options)
from .weights import checkpoint_variable_to_hdf5

logger = logging.getLogger(__name__)

DTYPE_INT = tf.int64
# Schedules of the original training loop (module attributes so tests can shorten them).
SUMMARY_EVERY = 100       # scalar summaries and the perplexity / progress log line
HISTOGRAM_EVERY = 1250    # histogram summaries
CHECKPOINT_EVERY = 1250   # checkpoints (plus one at the end of the run)
MAX_CHECKPOINTS_TO_KEEP = 2
# The original's default: the token count of the 1B Word Benchmark.
DEFAULT_N_TRAIN_TOKENS = 768648884


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------

def validate_training_options(options: dict, source: str = "options",
                              is_training: bool = True) -> dict:
    """Check the keys the training graph needs; return a normalised deep copy.

    The copy has `lstm.use_skip_connections` (optional in training, as in
    the original) filled in with False. `char_cnn.n_characters` must be 261;
    otherwise `InvalidNumberOfCharacters` says to use 261 for training and
    262 for inference.

    Args:
      options: the options dict (as in options.json).
      source: file or object named in error messages.
      is_training: also require what only the training step reads
        (n_negative_samples_batch with sampled softmax, n_epochs,
        all_clip_norm_val).
    Raises:
      OptionsError naming the missing or bad key.
    """
    if not isinstance(options, dict):
        raise OptionsError(f"{source}: must be a dict (the options.json object), "
                           f"got {type(options).__name__}")
    options = copy.deepcopy(options)
    lstm = _get(options, "lstm", dict, source)
    lstm.setdefault("use_skip_connections", False)
    validate_options(options, source, n_characters=N_CHARACTERS_TRAINING)
    if lstm["projection_dim"] > lstm["dim"]:
        raise OptionsError(f"{source}: 'lstm.projection_dim' ({lstm['projection_dim']}) "
                           f"must not exceed 'lstm.dim' ({lstm['dim']})")
    for key in ("n_tokens_vocab", "batch_size", "unroll_steps"):
        if _get(options, key, int, source) < 1:
            raise OptionsError(f"{source}: '{key}' must be positive")
    dropout = _get(options, "dropout", float, source)
    if not 0.0 <= dropout < 1.0:
        raise OptionsError(f"{source}: 'dropout' must be in [0, 1), got {dropout}")
    _get(options, "bidirectional", bool, source, required=False)
    _get(options, "share_embedding_softmax", bool, source, required=False)
    sample_softmax = _get(options, "sample_softmax", bool, source, required=False,
                          default=True)
    if is_training:
        if sample_softmax:
            n_negative = _get(options, "n_negative_samples_batch", int, source)
            if not 1 <= n_negative <= options["n_tokens_vocab"]:
                raise OptionsError(
                    f"{source}: 'n_negative_samples_batch' ({n_negative}) must be "
                    f"between 1 and n_tokens_vocab ({options['n_tokens_vocab']}): "
                    "negative samples are drawn without replacement")
        if _get(options, "n_epochs", int, source) < 1:
            raise OptionsError(f"{source}: 'n_epochs' must be positive")
        if _get(options, "all_clip_norm_val", float, source) <= 0:
            raise OptionsError(f"{source}: 'all_clip_norm_val' must be positive")
        _get(options, "n_train_tokens", int, source, required=False)
        if _get(options, "checkpoint_every", int, source, required=False,
                default=CHECKPOINT_EVERY) < 1:
            raise OptionsError(f"{source}: 'checkpoint_every' must be positive")
        if _get(options, "learning_rate", float, source, required=False,
                default=0.2) <= 0:
            raise OptionsError(f"{source}: 'learning_rate' must be positive")
    return options


def inference_options(options: dict) -> dict:
    """The options.json for `BidirectionalLanguageModel` of a trained model:
    char_cnn.n_characters 262 (ids shifted +1, zero row 0) and every optional
    LSTM key written out."""
    options = validate_training_options(options, is_training=False)
    if "char_cnn" in options:
        options["char_cnn"]["n_characters"] = N_CHARACTERS_INFERENCE
    lstm = options["lstm"]
    lstm.setdefault("n_layers", 1)
    return options


# ---------------------------------------------------------------------------
# The graph
# ---------------------------------------------------------------------------

def _scope(name: Optional[str]):
    """tf.variable_scope(name), or no scope at all for None."""
    return tf.variable_scope(name) if name else ExitStack()


class LanguageModel(object):
    """The training / evaluation graph of a (bi)LM for one tower.

    Built under the caller's variable scope (`lm` in `train`, `test` and
    `dump_weights`). Placeholders have the fixed shape
    [batch_size, unroll_steps] (chars: [..., max_characters_per_token]):
      token_ids / tokens_characters (+ *_reverse when bidirectional),
      next_token_id (+ next_token_id_reverse), int64.
    Attributes:
      embedding(_reverse): float32 [B, T, projection_dim], token embeddings.
      init_lstm_state: per direction, per layer (c [B, dim], h [B, out_dim]):
        placeholders defaulting to zeros; feed the previous batch's
        final_lstm_state to carry the state.
      final_lstm_state: same structure, the states after the last step.
      lstm_outputs: per direction, per layer float32 [B, T, out_dim], before
        the output dropout; the backward direction's in its (reversed) input
        order.
      individual_losses: mean loss per direction; total_loss: their mean.
    """

    def __init__(self, options: dict, is_training: bool):
        self.options = validate_training_options(options, is_training=is_training)
        self.is_training = is_training
        self.bidirectional = self.options.get("bidirectional", False)
        self.char_inputs = "char_cnn" in self.options
        self.share_embedding_softmax = self.options.get("share_embedding_softmax", False)
        if self.char_inputs and self.share_embedding_softmax:
            raise ValueError("share_embedding_softmax requires word inputs: this "
                             "model has a 'char_cnn' section (character inputs)")
        self.sample_softmax = self.options.get("sample_softmax", True)
        self._build()

    def _input_placeholders(self, name: str, extra_dims: Sequence[int] = ()
                            ) -> List[tf.Tensor]:
        shape = (self.options["batch_size"], self.options["unroll_steps"], *extra_dims)
        suffixes = ["", "_reverse"] if self.bidirectional else [""]
        return [tf.placeholder(DTYPE_INT, shape=shape, name=name + suffix)
                for suffix in suffixes]

    def _build_word_embeddings(self) -> List[tf.Tensor]:
        """Token embeddings [B, T, projection_dim] per direction (word input)."""
        projection_dim = self.options["lstm"]["projection_dim"]
        ids = self._input_placeholders("token_ids")
        self.token_ids = ids[0]
        if self.bidirectional:
            self.token_ids_reverse = ids[1]
        with tf.device("/cpu:0"):
            self.embedding_weights = tf.get_variable(
                "embedding", [self.options["n_tokens_vocab"], projection_dim],
                dtype=DTYPE)
            return [tf.nn.embedding_lookup(self.embedding_weights, token_ids)
                    for token_ids in ids]

    def _build_char_embeddings(self) -> List[tf.Tensor]:
        """Token embeddings [B, T, projection_dim] per direction (char CNN)."""
        cnn_options = self.options["char_cnn"]
        projection_dim = self.options["lstm"]["projection_dim"]
        ids = self._input_placeholders("tokens_characters",
                                       [cnn_options["max_characters_per_token"]])
        self.tokens_characters = ids[0]
        if self.bidirectional:
            self.tokens_characters_reverse = ids[1]
        weights = create_char_cnn_weights(cnn_options, projection_dim)
        self.embedding_weights = weights["char_embed"]
        shape = [self.options["batch_size"], self.options["unroll_steps"], projection_dim]
        embeddings = []
        for char_ids in ids:
            embedding = char_cnn(char_ids, weights, cnn_options)
            embedding.set_shape(shape)
            embeddings.append(embedding)
        return embeddings

    def _build(self) -> None:
        if self.char_inputs:
            lstm_inputs = self._build_char_embeddings()
        else:
            lstm_inputs = self._build_word_embeddings()
        self.embedding = lstm_inputs[0]
        if self.bidirectional:
            self.embedding_reverse = lstm_inputs[1]
        top_outputs = self._build_lstms(lstm_inputs)
        self._build_loss(top_outputs)

    def _dropout(self, x: tf.Tensor) -> tf.Tensor:
        dropout = self.options["dropout"]
        if self.is_training and dropout > 0:
            return tf.nn.dropout(x, rate=dropout)
        return x

    def _build_lstms(self, lstm_inputs: List[tf.Tensor]) -> List[tf.Tensor]:
        """LSTM stacks, one per direction; returns each direction's top
        output flattened to [B * T, out_dim] (dropped out when training)."""
        settings = lstm_settings(self.options)
        lstm_dim, projection_dim = settings["dim"], settings["projection_dim"]
        n_layers = settings["n_layers"]
        out_dim = lstm_output_dim(lstm_dim, projection_dim)
        batch_size = self.options["batch_size"]
        if settings["use_skip_connections"]:
            logger.debug("using skip connections")

        self.init_lstm_state, self.final_lstm_state, self.lstm_outputs = [], [], []
        top_outputs = []
        for direction, layer_input in enumerate(lstm_inputs):
            init_states, final_states, outputs = [], [], []
            direction_scope = f"RNN_{direction}" if self.bidirectional else None
            with _scope(direction_scope), tf.variable_scope("rnn"), \
                    _scope("multi_rnn_cell" if n_layers > 1 else None):
                for layer in range(n_layers):
                    init_state = tuple(
                        tf.placeholder_with_default(
                            tf.zeros([batch_size, dim], DTYPE), [batch_size, dim],
                            name=f"initial_state_{direction}_{layer}_{part}")
                        for dim, part in ((lstm_dim, "c"), (out_dim, "h")))
                    # the TF1 DropoutWrapper drops each layer's input; a
                    # ResidualWrapper inside it adds the dropped-out input
                    cell_input = self._dropout(layer_input)
                    with _scope(f"cell_{layer}" if n_layers > 1 else None):
                        weights = create_lstm_weights(
                            int(cell_input.shape[-1]), lstm_dim, projection_dim)
                    layer_output, final_state = run_lstm(
                        cell_input, weights, init_state, sequence_lengths=None,
                        cell_clip=settings["cell_clip"], proj_clip=settings["proj_clip"],
                        residual=settings["use_skip_connections"] and layer > 0)
                    layer_output.set_shape([batch_size, self.options["unroll_steps"],
                                            out_dim])
                    init_states.append(init_state)
                    final_states.append(final_state)
                    outputs.append(layer_output)
                    layer_input = layer_output
            self.init_lstm_state.append(init_states)
            self.final_lstm_state.append(final_states)
            self.lstm_outputs.append(outputs)
            tf.add_to_collection("lstm_output_embeddings", outputs[-1])
            top_outputs.append(self._dropout(tf.reshape(outputs[-1], [-1, out_dim])))
        return top_outputs

    def _build_loss(self, top_outputs: List[tf.Tensor]) -> None:
        """Softmax (shared by both directions) and the losses.

        Sampled softmax (log-uniform sampler) when training with
        sample_softmax, else the full softmax.
        """
        n_tokens_vocab = self.options["n_tokens_vocab"]
        softmax_dim = self.options["lstm"]["projection_dim"]
        targets = self._input_placeholders("next_token_id")
        self.next_token_id = targets[0]
        if self.bidirectional:
            self.next_token_id_reverse = targets[1]

        if self.share_embedding_softmax:
            self.softmax_W = self.embedding_weights
        with tf.variable_scope("softmax"), \
                (tf.device("/cpu:0") if self.is_training else ExitStack()):
            if not self.share_embedding_softmax:
                self.softmax_W = tf.get_variable(
                    "W", [n_tokens_vocab, softmax_dim], dtype=DTYPE,
                    initializer=tf.random_normal_initializer(
                        0.0, 1.0 / np.sqrt(softmax_dim)))
            self.softmax_b = tf.get_variable(
                "b", [n_tokens_vocab], dtype=DTYPE,
                initializer=tf.constant_initializer(0.0))

        self.individual_losses = []
        for target_ids, output in zip(targets, top_outputs):
            target_ids = tf.reshape(target_ids, [-1, 1])
            if self.is_training and self.sample_softmax:
                losses = tf.nn.sampled_softmax_loss(
                    self.softmax_W, self.softmax_b, target_ids, output,
                    self.options["n_negative_samples_batch"], n_tokens_vocab,
                    num_true=1)
            else:
                logits = tf.matmul(output, self.softmax_W, transpose_b=True) + self.softmax_b
                losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
                    logits=logits, labels=tf.squeeze(target_ids, axis=1))
            self.individual_losses.append(tf.reduce_mean(losses))
        if self.bidirectional:
            self.total_loss = 0.5 * (self.individual_losses[0] + self.individual_losses[1])
        else:
            self.total_loss = self.individual_losses[0]

    # -- feeding ---------------------------------------------------------

    def flat_init_states(self) -> List[tf.Tensor]:
        """init_lstm_state as one flat list (c, h per direction and layer)."""
        return [t for states in self.init_lstm_state for state in states for t in state]

    def flat_final_states(self) -> List[tf.Tensor]:
        """final_lstm_state, flattened in the order of flat_init_states."""
        return [t for states in self.final_lstm_state for state in states for t in state]

    def feed_dict(self, batch: Dict[str, Optional[np.ndarray]], start: int = 0,
                  end: Optional[int] = None) -> Dict[tf.Tensor, np.ndarray]:
        """Inputs and targets of rows [start:end] of a dataset batch."""
        input_key = "tokens_characters" if self.char_inputs else "token_ids"
        pairs = [(self.tokens_characters if self.char_inputs else self.token_ids,
                  input_key), (self.next_token_id, "next_token_id")]
        if self.bidirectional:
            pairs += [(self.tokens_characters_reverse if self.char_inputs
                       else self.token_ids_reverse, input_key + "_reverse"),
                      (self.next_token_id_reverse, "next_token_id_reverse")]
        feeds = {}
        for placeholder, key in pairs:
            values = batch.get(key)
            if values is None:
                raise ValueError(_missing_batch_key_message(key, self.options))
            values = values[start:end]
            if tuple(values.shape) != tuple(placeholder.shape.as_list()):
                raise ValueError(f"batch '{key}' has shape {values.shape} but the "
                                 f"model expects {tuple(placeholder.shape.as_list())}"
                                 + _shape_hint(key, self.options))
            feeds[placeholder] = values
        return feeds


def _missing_batch_key_message(key: str, options: dict) -> str:
    if key.startswith("tokens_characters"):
        return ("the model has character inputs (options has 'char_cnn') but the "
                "dataset yields no character ids: load its vocabulary with "
                "load_vocab(vocab_file, max_characters_per_token)")
    if key.endswith("_reverse"):
        return ("the model is bidirectional but the dataset has no reverse "
                f"batches ('{key}'): use BidirectionalLMDataset")
    return f"the dataset's batches have no '{key}'"


def _shape_hint(key: str, options: dict) -> str:
    if key.startswith("tokens_characters") and "char_cnn" in options:
        return (" (is the vocabulary's max_word_length equal to "
                "char_cnn.max_characters_per_token "
                f"{options['char_cnn']['max_characters_per_token']}?)")
    return ""


def print_variable_summary() -> None:
    """Log every global variable of the default graph with its shape."""
    rows = sorted((v.name, v.shape.as_list()) for v in tf.global_variables())
    logger.info("%d variables:\n%s", len(rows),
                "\n".join(f"  {name} {shape}" for name, shape in rows))


# ---------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------

def _deduplicate_indexed_slices(values: tf.Tensor, indices: tf.Tensor
                                ) -> Tuple[tf.Tensor, tf.Tensor]:
    """Sum the rows of `values` [n, ...] that share an index of `indices` [n];
    returns (summed values [u, ...], unique indices [u])."""
    unique_indices, positions = tf.unique(indices)
    summed = tf.math.unsorted_segment_sum(values, positions, tf.shape(unique_indices)[0])
    return summed, unique_indices


def average_gradients(tower_grads: List[List[Tuple[tf.Tensor, tf.Variable]]],
                      batch_size: int, options: dict) -> List[Tuple[tf.Tensor, tf.Variable]]:
    """Average each variable's gradient over the towers.

    Args:
      tower_grads: per tower, the (gradient, variable) list of
        `compute_gradients`, same variable order in every tower.
      batch_size, options: unused, kept for the original's signature.
    Returns:
      one (gradient, variable) list. Sparse gradients (IndexedSlices) are
      concatenated, divided by the number of towers and de-duplicated;
      a None gradient stays None.
    """
    averaged = []
    for grads_and_vars in zip(*tower_grads):
        first_grad, variable = grads_and_vars[0]
        if first_grad is None:
            averaged.append((None, variable))
            continue
        n_towers = len(grads_and_vars)
        if isinstance(first_grad, tf.IndexedSlices):
            indices = tf.concat([g.indices for g, _ in grads_and_vars], axis=0)
            values = tf.concat([g.values for g, _ in grads_and_vars], axis=0) / n_towers
            values, indices = _deduplicate_indexed_slices(values, indices)
            grad = tf.IndexedSlices(values, indices, dense_shape=first_grad.dense_shape)
        else:
            grad = tf.reduce_mean(tf.stack([g for g, _ in grads_and_vars]), axis=0)
        averaged.append((grad, variable))
    return averaged


def _norm_summaries(tag: str, grads: Sequence[tf.Tensor],
                    variables: Sequence[tf.Variable]) -> List[tf.Tensor]:
    return [tf.summary.scalar(f"{tag}/" + v.name.replace(":", "_"), tf.global_norm([g]))
            for g, v in zip(grads, variables) if g is not None]


def clip_grads(grads: List[Tuple[tf.Tensor, tf.Variable]], options: dict,
               do_summaries: bool, global_step: tf.Variable
               ) -> Tuple[List[Tuple[tf.Tensor, tf.Variable]], List[tf.Tensor]]:
    """Clip all gradients together to global norm options['all_clip_norm_val'].

    Returns the clipped (gradient, variable) list and, with `do_summaries`,
    scalar summaries of each gradient's norm before ('norm_pre_clip/...') and
    after ('norm_post_clip/...') clipping and of the global norm ('norm_grad').
    """
    gradients = [g for g, _ in grads]
    variables = [v for _, v in grads]
    clipped, global_norm = tf.clip_by_global_norm(gradients, options["all_clip_norm_val"])
    summaries = []
    if do_summaries:
        summaries = (_norm_summaries("norm_pre_clip", gradients, variables)
                     + _norm_summaries("norm_post_clip", clipped, variables)
                     + [tf.summary.scalar("norm_grad", global_norm)])
    return list(zip(clipped, variables)), summaries


def summary_gradient_updates(grads: List[Tuple[tf.Tensor, tf.Variable]],
                             opt: tf.train.Optimizer, lr: float) -> List[tf.Tensor]:
    """Scalar summaries 'UPDATE/<variable>': norm of the Adagrad update over
    the norm of the values it updates (for a sparse gradient, the rows it
    touches)."""
    summaries = []
    for grad, variable in grads:
        if grad is None:
            continue
        accumulator = opt.get_slot(variable, "accumulator")
        if isinstance(grad, tf.IndexedSlices):
            values = tf.gather(variable, grad.indices)
            updates = lr * grad.values
            if accumulator is not None:
                updates /= tf.sqrt(tf.gather(accumulator, grad.indices))
        else:
            values = tf.convert_to_tensor(variable)
            updates = lr * grad
            if accumulator is not None:
                updates /= tf.sqrt(tf.convert_to_tensor(accumulator))
        ratio = tf.norm(updates) / (tf.norm(values) + 1.0e-7)
        summaries.append(tf.summary.scalar("UPDATE/" + variable.name.replace(":", "_"),
                                           ratio))
    return summaries


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------

_OLD_CELL_NAMES = ((re.compile(r"(lstm_cell/(?:projection/)?)kernel(?=/|$)"), r"\1weights"),
                   (re.compile(r"(lstm_cell/)bias(?=/|$)"), r"\1biases"))
# restored when present, left at its initial value when not (it is only a
# bookkeeping variable of the original)
_OPTIONAL_CHECKPOINT_VARIABLES = ("train_perplexity",)


def _old_cell_name(name: str) -> str:
    """'.../lstm_cell/kernel/Adagrad' -> '.../lstm_cell/weights/Adagrad' (TF < 1.2)."""
    for pattern, replacement in _OLD_CELL_NAMES:
        name = pattern.sub(replacement, name)
    return name


def checkpoint_name_map(ckpt_file: str, variables: Iterable[tf.Variable]
                        ) -> Dict[str, tf.Variable]:
    """{name in the checkpoint: graph variable} for restoring `variables`.

    A variable is found under its own name or under its TF < 1.2 LSTM name
    (weights/biases for kernel/bias).
    Raises:
      ValueError listing variables the checkpoint lacks or holds with
      another shape (e.g. options.json does not match the checkpoint).
    """
    try:
        available = dict(tf.train.list_variables(ckpt_file))
    except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as err:
        raise ValueError(f"cannot read checkpoint {ckpt_file}: {err}") from None
    name_map, missing, mismatched = {}, [], []
    for variable in variables:
        name = re.sub(r":0$", "", variable.name)
        candidates = [n for n in (name, _old_cell_name(name)) if n in available]
        if not candidates:
            if name not in _OPTIONAL_CHECKPOINT_VARIABLES:
                missing.append(name)
            continue
        stored_name = candidates[0]
        shape = variable.shape.as_list()
        if list(available[stored_name]) != shape:
            mismatched.append(f"{stored_name}: checkpoint {list(available[stored_name])}, "
                              f"graph {shape}")
            continue
        name_map[stored_name] = variable
    problems = []
    if missing:
        problems.append(f"{len(missing)} variable(s) missing: " + ", ".join(missing[:8])
                        + (" ..." if len(missing) > 8 else ""))
    if mismatched:
        problems.append("shape mismatch: " + "; ".join(mismatched[:8])
                        + (" ..." if len(mismatched) > 8 else ""))
    if problems:
        raise ValueError(f"checkpoint {ckpt_file} does not match the model built from "
                         "options.json: " + ". ".join(problems))
    return name_map


def restore_checkpoint(sess: tf.Session, ckpt_file: str,
                       variables: Optional[Iterable[tf.Variable]] = None) -> None:
    """Restore `variables` (default: all global variables) from `ckpt_file`,
    accepting the old LSTM names (see `checkpoint_name_map`)."""
    if variables is None:
        variables = tf.global_variables()
    name_map = checkpoint_name_map(ckpt_file, variables)
    tf.train.Saver(name_map).restore(sess, ckpt_file)


def load_options_latest_checkpoint(tf_save_dir: str) -> Tuple[dict, str]:
    """(options of tf_save_dir/options.json, path of its latest checkpoint).

    Raises:
      FileNotFoundError when the directory has no options.json or no checkpoint.
    """
    options_file = os.path.join(tf_save_dir, "options.json")
    if not os.path.isfile(options_file):
        raise FileNotFoundError(f"no options.json in {tf_save_dir}: not a training "
                                "save directory (see bin/train_elmo.py --save_dir)")
    options = load_options(options_file)
    ckpt_file = tf.train.latest_checkpoint(tf_save_dir)
    if ckpt_file is None:
        raise FileNotFoundError(f"no checkpoint in {tf_save_dir}: its 'checkpoint' "
                                "file is missing or lists no model.ckpt-N")
    return options, ckpt_file


def load_vocab(vocab_file: str, max_word_length: Optional[int] = None) -> Vocabulary:
    """The training vocabulary, which must hold <S>, </S> and <UNK>.

    A UnicodeCharsVocabulary when `max_word_length` is given (character
    input), else a Vocabulary. ValueError names a missing special token.
    """
    if max_word_length:
        return UnicodeCharsVocabulary(vocab_file, max_word_length, validate_file=True)
    return Vocabulary(vocab_file, validate_file=True)


def load_data(options: dict, vocab_file: str, filepattern: str, test: bool = False,
              cluster: Optional[Cluster] = None):
    """The vocabulary and dataset that `options` call for: characters or
    words, bi- or unidirectional. Training shuffles each shard on load; test
    visits every shard once in order. On a worker of a `cluster` the dataset
    reads only that worker's share of the data (`bilm.cluster.worker_shards`:
    its own files, or every n_workers-th line when files are fewer than
    workers).

    Returns (vocabulary, LMDataset or BidirectionalLMDataset).
    """
    max_word_length = (options["char_cnn"]["max_characters_per_token"]
                       if "char_cnn" in options else None)
    vocab = load_vocab(vocab_file, max_word_length)
    dataset = BidirectionalLMDataset if options.get("bidirectional") else LMDataset
    if cluster is None:
        return vocab, dataset(filepattern, vocab, test=test, shuffle_on_load=not test)
    if test:
        raise ValueError("a cluster reads training data only; test() runs in one process")
    share = worker_shards(filepattern, cluster)
    return vocab, dataset(list(share.files), vocab, test=False, shuffle_on_load=True,
                          shard=share.line_shard)


def _check_dataset(options: dict, data) -> None:
    """The dataset's vocabulary must agree with n_tokens_vocab and the char width."""
    vocab = getattr(data, "vocab", None)
    if vocab is None:
        return
    if vocab.size != options["n_tokens_vocab"]:
        raise ValueError(f"the vocabulary has {vocab.size} tokens but options "
                         f"'n_tokens_vocab' is {options['n_tokens_vocab']}; they "
                         "must be equal (set n_tokens_vocab to the vocabulary size)")
    width = getattr(vocab, "max_word_length", None)
    if "char_cnn" in options:
        expected = options["char_cnn"]["max_characters_per_token"]
        if width is None:
            raise ValueError(_missing_batch_key_message("tokens_characters", options))
        if width != expected:
            raise ValueError(f"the vocabulary has max_word_length {width} but "
                             f"char_cnn.max_characters_per_token is {expected}")


def _write_json(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fout:
        json.dump(obj, fout, indent=2)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

class _TrainingGraph(object):
    """Everything `train` runs, built in the default graph.

    With a `cluster` (a worker's Cluster) the variables go to the ps tasks
    (replica_device_setter, the same variables and names as without one)
    and the update is synchronous across the workers (`SyncReplicas`): the
    chief clips and applies the gradients averaged over all workers, and
    its train_op returns the new global step (int64); a non-chief worker's
    train_op pushes its gradients and returns the chief's token (the global
    step of its next batch, or cluster.STOP_TOKEN), and it has no summaries.
    """

    def __init__(self, options: dict, n_gpus: int, cluster: Optional[Cluster] = None,
                 target_step: Optional[int] = None):
        self.replicas = None
        self.summary_op = self.histogram_op = None
        device_setter = ExitStack() if cluster is None else tf.device(
            tf.train.replica_device_setter(worker_device=cluster.worker_device,
                                           cluster=cluster.spec))
        with device_setter, tf.device("/cpu:0"):
            # float32 like the original, so that its checkpoints restore
            self.global_step = tf.get_variable(
                "global_step", [], initializer=tf.constant_initializer(0),
                trainable=False)
            lr = options.get("learning_rate", 0.2)
            opt = tf.train.AdagradOptimizer(learning_rate=lr,
                                            initial_accumulator_value=1.0)
            perplexity_variable = tf.get_variable(
                "train_perplexity", [], initializer=tf.constant_initializer(0.0),
                trainable=False)
            # the original adds the tower losses to this (always 0) variable
            loss_sum = tf.convert_to_tensor(perplexity_variable)
            tower_grads, self.models = [], []
            for k in range(n_gpus):
                with tf.device(f"/gpu:{k}"), tf.variable_scope("lm", reuse=k > 0):
                    model = LanguageModel(options, True)
                    self.models.append(model)
                    tower_grads.append(opt.compute_gradients(
                        model.total_loss * options["unroll_steps"],
                        aggregation_method=tf.AggregationMethod.EXPERIMENTAL_TREE))
                    loss_sum += model.total_loss
            print_variable_summary()

            grads = average_gradients(tower_grads, options["batch_size"], options)
            self.train_perplexity = tf.exp(loss_sum / n_gpus)
            if cluster is not None:
                self.replicas = SyncReplicas(cluster, self.global_step)
                push_op = self.replicas.push_gradients(grads)
                if cluster.is_chief:
                    grads = self.replicas.aggregated_gradients(push_op)
                else:
                    self.train_op = self.replicas.wait_for_update(push_op)
            if cluster is None or cluster.is_chief:
                self._build_update(options, opt, lr, grads)
                if cluster is not None:
                    self.train_op = self.replicas.finish_update(self.train_op, target_step)
            self.saver = tf.train.Saver(tf.global_variables(),
                                        max_to_keep=MAX_CHECKPOINTS_TO_KEEP)
            self.init_op = tf.global_variables_initializer()

        self.init_state_tensors = [t for m in self.models for t in m.flat_init_states()]
        self.final_state_tensors = [t for m in self.models for t in m.flat_final_states()]

    def batch_feed(self, batch: dict, state_values: List[np.ndarray],
                   batch_size: int) -> dict:
        """Feed for one batch: the carried LSTM states, and rows
        [k * batch_size, (k + 1) * batch_size) of the batch for tower k."""
        feed_dict = dict(zip(self.init_state_tensors, state_values))
        for k, model in enumerate(self.models):
            feed_dict.update(model.feed_dict(batch, k * batch_size, (k + 1) * batch_size))
        return feed_dict

    def _build_update(self, options: dict, opt: tf.train.Optimizer, lr: float,
                      grads: List[Tuple[tf.Tensor, tf.Variable]]) -> None:
        """Clipping, Adagrad (train_op) and the summaries of the update."""
        grads, norm_summaries = clip_grads(grads, options, True, self.global_step)
        self.summary_op = tf.summary.merge(
            [tf.summary.scalar("train_perplexity", self.train_perplexity)]
            + norm_summaries)

        histograms = [tf.summary.histogram("token_embedding", self.models[0].embedding)]
        for direction, outputs in enumerate(self.models[0].lstm_outputs):
            histograms.append(tf.summary.histogram(f"lstm_embedding_{direction}",
                                                   outputs[-1]))
        self.train_op = opt.apply_gradients(grads, global_step=self.global_step)
        for variable in tf.global_variables():
            histograms.append(tf.summary.histogram(
                variable.name.replace(":", "_"), variable))
        histograms.extend(summary_gradient_updates(grads, opt, lr))
        self.histogram_op = tf.summary.merge(histograms)


def _format_duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(round(seconds))))


def train(options: dict, data, n_gpus: int, tf_save_dir: str, tf_log_dir: str,
          restart_ckpt_file: Optional[str] = None,
          cluster: Optional[Cluster] = None) -> Optional[str]:
    """Train a (bi)LM and write checkpoints tf_save_dir/model.ckpt-<global step>.

    Args:
      options: training options (SPEC §1, §4). Saved as
        tf_save_dir/options.json unless restarting.
      data: an LMDataset (unidirectional) or BidirectionalLMDataset; batches
        of batch_size * n_gpus rows are split across the towers.
      n_gpus: number of towers ('/gpu:k'; they run on the CPU when there is
        no GPU).
      tf_save_dir: checkpoint directory (created if needed).
      tf_log_dir: TensorBoard summaries.
      restart_ckpt_file: continue from this checkpoint (weights, Adagrad
        accumulators and global_step); old LSTM names are accepted.
      cluster: this worker's task of a cluster (`bilm.cluster`), or None
        for one process. See `_train_in_cluster` for what changes.
    Runs n_epochs * int(n_train_tokens / (batch_size * unroll_steps * n_gpus))
    batches, or fewer if `data` runs out. A checkpoint is written every
    options['checkpoint_every'] (default CHECKPOINT_EVERY) batches and at the
    end; on KeyboardInterrupt nothing more is written (the last checkpoint
    stays intact) and the interrupt is re-raised.
    Returns:
      the path of the last checkpoint written (None on a non-chief worker).
    """
    options = _check_train_arguments(options, n_gpus)
    _check_dataset(options, data)
    batch_size, unroll_steps = options["batch_size"], options["unroll_steps"]
    n_train_tokens = options.get("n_train_tokens")
    if n_train_tokens is None:
        n_train_tokens = DEFAULT_N_TRAIN_TOKENS
        logger.warning("options have no 'n_train_tokens'; using the original's "
                       "default %d (1B Word Benchmark)", n_train_tokens)
    n_workers = 1 if cluster is None else cluster.n_workers
    n_tokens_per_batch = batch_size * unroll_steps * n_gpus * n_workers
    n_batches_per_epoch = int(n_train_tokens / n_tokens_per_batch)
    n_batches_total = options["n_epochs"] * n_batches_per_epoch
    if n_batches_total < 1:
        raise ValueError(
            f"n_train_tokens ({n_train_tokens}) is smaller than one batch of "
            f"batch_size * unroll_steps * n_gpus{' * n_workers' if cluster else ''} = "
            f"{n_tokens_per_batch} tokens: nothing to train")
    if cluster is not None:
        return _train_in_cluster(options, data, n_gpus, tf_save_dir, tf_log_dir,
                                 restart_ckpt_file, cluster, n_batches_total)

    os.makedirs(tf_save_dir, exist_ok=True)
    if restart_ckpt_file is None:
        _write_json(os.path.join(tf_save_dir, "options.json"), options)

    with tf.Graph().as_default():
        graph = _TrainingGraph(options, n_gpus)
        config = tf.ConfigProto(allow_soft_placement=True)
        with tf.Session(config=config) as sess:
            sess.run(graph.init_op)
            if restart_ckpt_file is not None:
                restore_checkpoint(sess, restart_ckpt_file)
                logger.info("restored %s (global step %d)", restart_ckpt_file,
                            int(sess.run(graph.global_step)))
            summary_writer = tf.summary.FileWriter(tf_log_dir, sess.graph)
            try:
                return _training_loop(sess, graph, options, data, n_gpus,
                                      n_batches_total, tf_save_dir, summary_writer)
            finally:
                summary_writer.close()


def _check_train_arguments(options: dict, n_gpus: int) -> dict:
    options = validate_training_options(options, is_training=True)
    if "char_cnn" in options and options.get("share_embedding_softmax", False):
        raise ValueError("share_embedding_softmax requires word inputs: this "
                         "model has a 'char_cnn' section (character inputs)")
    if not isinstance(n_gpus, int) or n_gpus < 1:
        raise ValueError(f"n_gpus must be a positive integer, got {n_gpus!r}")
    return options


def _training_loop(sess: tf.Session, graph: _TrainingGraph, options: dict, data,
                   n_gpus: int, n_batches_total: int, tf_save_dir: str,
                   summary_writer) -> str:
    batch_size, unroll_steps = options["batch_size"], options["unroll_steps"]
    n_tokens_per_batch = batch_size * unroll_steps * n_gpus
    checkpoint_path = os.path.join(tf_save_dir, "model.ckpt")
    checkpoint_every = options.get("checkpoint_every", CHECKPOINT_EVERY)
    logger.info("Training for %d epochs and %d batches (%d tokens per batch)",
                options["n_epochs"], n_batches_total, n_tokens_per_batch)

    # LSTM states: zeros for the first batch, then the previous batch's final states
    state_values = [np.zeros(t.shape.as_list(), np.float32)
                    for t in graph.init_state_tensors]
    last_checkpoint = None
    batch_no = 0
    saved_at = 0
    start_time = time.time()
    try:
        for batch_no, batch in enumerate(
                data.iter_batches(batch_size * n_gpus, unroll_steps), start=1):
            feed_dict = graph.batch_feed(batch, state_values, batch_size)
            # summaries are only computed on the batches that write them
            fetches = {"train": graph.train_op, "perplexity": graph.train_perplexity,
                       "states": graph.final_state_tensors}
            if batch_no % SUMMARY_EVERY == 0:
                fetches["summary"] = graph.summary_op
            if batch_no % HISTOGRAM_EVERY == 0:
                fetches["histogram"] = graph.histogram_op
            results = sess.run(fetches, feed_dict=feed_dict)
            state_values = results["states"]
            perplexity = results["perplexity"]
            for key in ("histogram", "summary"):
                if key in results:
                    summary_writer.add_summary(results[key], batch_no)
            is_last = batch_no == n_batches_total
            if batch_no % SUMMARY_EVERY == 0 or is_last:
                _log_progress(batch_no, n_batches_total, perplexity,
                              time.time() - start_time, n_tokens_per_batch)
            if batch_no % checkpoint_every == 0 or is_last:
                last_checkpoint = graph.saver.save(sess, checkpoint_path,
                                                   global_step=graph.global_step)
                saved_at = batch_no
            if is_last:
                break
    except KeyboardInterrupt:
        logger.warning("interrupted after %d batches; the last checkpoint is %s",
                       batch_no, last_checkpoint or
                       tf.train.latest_checkpoint(tf_save_dir) or "none")
        raise
    if batch_no < n_batches_total:
        logger.warning("the data ran out after %d of %d batches", batch_no,
                       n_batches_total)
        if batch_no > saved_at:
            last_checkpoint = graph.saver.save(sess, checkpoint_path,
                                               global_step=graph.global_step)
    if last_checkpoint is None:
        raise ValueError("the training data yielded no complete batch of "
                         f"{batch_size * n_gpus} x {unroll_steps} tokens")
    logger.info("finished %d batches; checkpoint %s", batch_no, last_checkpoint)
    return last_checkpoint


def _log_progress(batch_no: int, n_batches_total: int, perplexity: float,
                  elapsed: float, n_tokens_per_batch: int, first_batch: int = 1) -> None:
    """One progress line; rate and ETA count the batches since `first_batch`."""
    n_done = max(batch_no - first_batch + 1, 1)
    tokens_per_second = n_done * n_tokens_per_batch / max(elapsed, 1e-9)
    eta = elapsed / n_done * (n_batches_total - batch_no)
    logger.info("batch %d/%d (%.1f%%), train_perplexity=%.3f, %.0f tokens/s, "
                "elapsed %s, ETA %s", batch_no, n_batches_total,
                100.0 * batch_no / n_batches_total, perplexity, tokens_per_second,
                _format_duration(elapsed), _format_duration(eta))


# ---------------------------------------------------------------------------
# Training on a cluster
# ---------------------------------------------------------------------------

CLUSTER_RUN_FILE = "cluster_run.json"


def _train_in_cluster(options: dict, data, n_gpus: int, tf_save_dir: str,
                      tf_log_dir: str, restart_ckpt_file: Optional[str],
                      cluster: Cluster, n_batches_total: int) -> Optional[str]:
    """`train` on one worker of a cluster (between-graph replication).

    Every worker builds the same graph; one global step is one synchronous
    update averaged over the n_workers * n_gpus towers. Only the chief
    (worker 0) writes: options.json, checkpoints (every checkpoint_every
    global steps and at the end) and summaries, all on its own machine. The
    run ends at an absolute global step, so a process restarted after a
    failure (with the same command) resumes the same run:
    n_batches_total without `restart_ckpt_file`, else the restart
    checkpoint's step + n_batches_total (kept in tf_save_dir/cluster_run.json
    so that a restarted chief resumes rather than extends the run).

    The session is a MonitoredSession (what MonitoredTrainingSession builds):
    on the chief it restores the latest checkpoint of tf_save_dir or
    initialises the variables, the other workers wait for that; a session
    that loses a ps task is re-created (the chief restores the latest
    checkpoint again).
    """
    if cluster.job_name != "worker":
        raise ValueError(f"train() runs on worker tasks, but this is {cluster}: "
                         "a ps task only serves variables "
                         "(bilm.cluster.run_parameter_server)")
    server = start_server(cluster)
    target_step = None
    if cluster.is_chief:
        os.makedirs(tf_save_dir, exist_ok=True)
        if restart_ckpt_file is None:
            _write_json(os.path.join(tf_save_dir, "options.json"), options)
        else:
            restart_ckpt_file = _import_checkpoint(options, restart_ckpt_file, tf_save_dir)
        target_step = _cluster_target_step(tf_save_dir, restart_ckpt_file, n_batches_total)

    with tf.Graph().as_default():
        graph = _TrainingGraph(options, n_gpus, cluster, target_step)
        local_init_ops = [tf.local_variables_initializer()]
        if cluster.is_chief:
            local_init_ops.append(graph.replicas.chief_init_op)
        scaffold = tf.train.Scaffold(init_op=graph.init_op,
                                     local_init_op=tf.group(*local_init_ops),
                                     saver=graph.saver)
        run = ClusterRun(cluster, server.target, graph.replicas, tf_save_dir)
        chief_restarted = run.variables_are_initialized(scaffold)
        summary_writer = (tf.summary.FileWriter(tf_log_dir, tf.get_default_graph())
                          if cluster.is_chief else None)
        try:
            # MonitoredTrainingSession's default hooks need an integer global
            # step (this one is float32): checkpoints and summaries are written
            # by the training loop instead
            with run.ending(), tf.train.MonitoredSession(
                    session_creator=run.session_creator(scaffold),
                    stop_grace_period_secs=10) as sess:
                if chief_restarted:
                    logger.warning("the ps tasks kept the variables of a chief that "
                                   "ended: resuming from its last checkpoint, the "
                                   "steps after it are lost")
                    sess.run(graph.replicas.resync_op)
                return _cluster_training_loop(sess, graph, options, data, n_gpus,
                                              cluster, target_step, tf_save_dir,
                                              summary_writer, run)
        finally:
            if summary_writer is not None:
                summary_writer.close()


def _import_checkpoint(options: dict, ckpt_file: str, tf_save_dir: str) -> str:
    """Make `ckpt_file` the latest checkpoint of tf_save_dir under the current
    variable names (the chief restores by name from there): returned as is
    when it already is, else copied (old LSTM names renamed)."""
    latest = tf.train.latest_checkpoint(tf_save_dir)
    with tf.Graph().as_default():
        graph = _TrainingGraph(options, 1)
        names = {re.sub(r":0$", "", v.name) for v in tf.global_variables()}
        stored = {name for name, _ in tf.train.list_variables(ckpt_file)}
        if latest is not None and os.path.abspath(latest) == os.path.abspath(ckpt_file) \
                and names <= stored:
            return ckpt_file
        with tf.Session(config=tf.ConfigProto(allow_soft_placement=True)) as sess:
            sess.run(graph.init_op)
            restore_checkpoint(sess, ckpt_file)
            copied = graph.saver.save(sess, os.path.join(tf_save_dir, "model.ckpt"),
                                      global_step=graph.global_step)
    logger.info("copied %s to %s for the cluster's chief to restore", ckpt_file, copied)
    return copied


def _cluster_target_step(tf_save_dir: str, restart_ckpt_file: Optional[str],
                         n_batches_total: int) -> int:
    """The global step at which the cluster run ends (see `_train_in_cluster`)."""
    if restart_ckpt_file is None:
        return n_batches_total
    start_step = int(tf.train.load_checkpoint(restart_ckpt_file).get_tensor("global_step"))
    record_file = os.path.join(tf_save_dir, CLUSTER_RUN_FILE)
    if os.path.isfile(record_file):
        with open(record_file, encoding="utf-8") as fin:
            record = json.load(fin)
        if record["start_step"] <= start_step < record["target_step"]:
            logger.info("resuming the unfinished cluster run from global step %d "
                        "to %d (%s)", record["start_step"], record["target_step"],
                        record_file)
            return record["target_step"]
    target_step = start_step + n_batches_total
    _write_json(record_file, {"start_step": start_step, "target_step": target_step})
    return target_step


def _cluster_training_loop(sess, graph: _TrainingGraph, options: dict, data,
                           n_gpus: int, cluster: Cluster, target_step: Optional[int],
                           tf_save_dir: str, summary_writer,
                           run: ClusterRun) -> Optional[str]:
    batch_size, unroll_steps = options["batch_size"], options["unroll_steps"]
    n_tokens_per_step = batch_size * unroll_steps * n_gpus * cluster.n_workers
    checkpoint_every = options.get("checkpoint_every", CHECKPOINT_EVERY)
    checkpoint_path = os.path.join(tf_save_dir, "model.ckpt")
    replicas = graph.replicas
    step = first_step = int(sess.run(graph.global_step))

    def save_checkpoint() -> str:
        return sess.run_step_fn(lambda step_context: graph.saver.save(
            step_context.session, checkpoint_path, global_step=step))

    if cluster.is_chief:
        state = tf.train.get_checkpoint_state(tf_save_dir)
        if state is not None:  # so that max_to_keep counts the earlier checkpoints
            graph.saver.recover_last_checkpoints(list(state.all_model_checkpoint_paths))
        logger.info("chief: training from global step %d to %d, %d tokens per step "
                    "(%d workers x %d towers)", step, target_step, n_tokens_per_step,
                    cluster.n_workers, n_gpus)
        if step >= target_step:
            sess.run(replicas.stop_op)
            logger.info("the run already reached global step %d", target_step)
            return tf.train.latest_checkpoint(tf_save_dir)
    else:
        logger.info("worker %d: joining at global step %d", cluster.task_index, step)

    state_values = [np.zeros(t.shape.as_list(), np.float32)
                    for t in graph.init_state_tensors]
    last_checkpoint, saved_at, n_batches, stopped = None, step, 0, False
    start_time = time.time()
    try:
        for batch in data.iter_batches(batch_size * n_gpus, unroll_steps):
            feed_dict = graph.batch_feed(batch, state_values, batch_size)
            fetches = {"step": graph.train_op, "perplexity": graph.train_perplexity,
                       "states": graph.final_state_tensors}
            if cluster.is_chief:
                # the summaries of the update; fetched with it, they use its gradients
                if (step + 1) % SUMMARY_EVERY == 0:
                    fetches["summary"] = graph.summary_op
                if (step + 1) % HISTOGRAM_EVERY == 0:
                    fetches["histogram"] = graph.histogram_op
            else:
                feed_dict[replicas.local_step] = step
            results = run.run_step(sess, fetches, feed_dict, step)
            state_values = results["states"]
            n_batches += 1
            if not cluster.is_chief:
                if results["step"] == STOP_TOKEN:
                    stopped = True
                    break
                step = int(results["step"])
                if n_batches % SUMMARY_EVERY == 0:
                    logger.info("worker %d: batch %d, global step %d, train_perplexity="
                                "%.3f", cluster.task_index, n_batches, step,
                                results["perplexity"])
                continue
            step = int(results["step"])
            for key in ("histogram", "summary"):
                if key in results:
                    summary_writer.add_summary(results[key], step)
            is_last = step >= target_step
            if step % SUMMARY_EVERY == 0 or is_last:
                _log_progress(step, target_step, results["perplexity"],
                              time.time() - start_time, n_tokens_per_step,
                              first_batch=first_step + 1)
            if step % checkpoint_every == 0 or is_last:
                last_checkpoint, saved_at = save_checkpoint(), step
            if is_last:
                break
    except KeyboardInterrupt:
        logger.warning("interrupted at global step %d; the last checkpoint is %s", step,
                       tf.train.latest_checkpoint(tf_save_dir) if cluster.is_chief
                       else "on the chief")
        raise
    if not cluster.is_chief:
        if not stopped:
            step = run.idle_until_stopped(sess, step)
        logger.info("worker %d: finished after %d batches (global step %d)",
                    cluster.task_index, n_batches, step)
        return None
    if step < target_step:
        # the other workers wait for the chief's tokens: stop them too
        logger.warning("the chief's data ran out at global step %d of %d", step,
                       target_step)
        sess.run(replicas.stop_op)
        if step > saved_at:
            last_checkpoint = save_checkpoint()
    last_checkpoint = last_checkpoint or tf.train.latest_checkpoint(tf_save_dir)
    logger.info("finished at global step %d; checkpoint %s", step, last_checkpoint)
    return last_checkpoint


# ---------------------------------------------------------------------------
# Evaluation and export
# ---------------------------------------------------------------------------

def test(options: dict, ckpt_file: str, data, batch_size: int = 256) -> float:
    """Perplexity of a checkpoint on `data` (a test-mode dataset).

    Runs unroll_steps 1 with the full softmax, carrying the LSTM states
    from batch to batch; the last incomplete batch is skipped.
    Returns:
      exp(mean over batches of the batch loss).
    """
    if ckpt_file is None:
        raise ValueError("no checkpoint given to test() (ckpt_file is None); "
                         "use load_options_latest_checkpoint(save_dir)")
    test_options = dict(options, batch_size=batch_size, unroll_steps=1)
    test_options = validate_training_options(test_options, is_training=False)
    _check_dataset(test_options, data)
    with tf.Graph().as_default():
        with tf.device("/gpu:0"), tf.variable_scope("lm"):
            model = LanguageModel(test_options, False)
        init_states = model.flat_init_states()
        final_states = model.flat_final_states()
        config = tf.ConfigProto(allow_soft_placement=True)
        with tf.Session(config=config) as sess:
            restore_checkpoint(sess, ckpt_file)
            state_values = [np.zeros(t.shape.as_list(), np.float32) for t in init_states]
            batch_losses = []
            start_time = time.time()
            for batch_no, batch in enumerate(data.iter_batches(batch_size, 1), start=1):
                feed_dict = dict(zip(init_states, state_values))
                feed_dict.update(model.feed_dict(batch))
                loss, state_values = sess.run([model.total_loss, final_states],
                                              feed_dict=feed_dict)
                batch_losses.append(loss)
                if batch_no % SUMMARY_EVERY == 0:
                    logger.info("batch %d, batch_perplexity=%.3f, avg_perplexity=%.3f, "
                                "%.0f tokens/s", batch_no, np.exp(loss),
                                np.exp(np.mean(batch_losses)),
                                batch_no * batch_size / (time.time() - start_time))
    if not batch_losses:
        raise ValueError(f"the test data yielded no complete batch of {batch_size} "
                         "rows: use a smaller batch_size")
    perplexity = float(np.exp(np.mean(batch_losses)))
    logger.info("FINISHED! %d batches, average perplexity = %.4f",
                len(batch_losses), perplexity)
    return perplexity


test.__test__ = False  # not a pytest test when imported into a test module


def dump_weights(tf_save_dir: str, outfile: str, options_outfile: Optional[str] = None,
                 include_softmax: bool = False) -> None:
    """Write the latest checkpoint of `tf_save_dir` as an inference weight hdf5.

    Every trainable variable except the softmax is written under its hdf5
    name (SPEC §1): char_embed keeps its 261 rows (inference prepends the
    zero row), a word model's `embedding` keeps n_tokens_vocab rows (row k
    is vocabulary id k).

    Args:
      tf_save_dir: training directory (options.json + checkpoints).
      outfile: the weight hdf5 to write (replaced atomically).
      options_outfile: if given, also write there the inference options.json
        (n_characters 262) that loads `outfile` in BidirectionalLanguageModel.
      include_softmax: also write 'softmax/W' [n_tokens_vocab, proj] (the
        embedding when it is shared) and 'softmax/b'.
    """
    options, ckpt_file = load_options_latest_checkpoint(tf_save_dir)
    source = os.path.join(tf_save_dir, "options.json")
    options = validate_training_options(options, source, is_training=False)
    if options_outfile is not None and os.path.abspath(options_outfile) == \
            os.path.abspath(source):
        raise ValueError(f"options_outfile {options_outfile} would overwrite the "
                         "training options.json (n_characters 261); choose another path")
    with tf.Graph().as_default():
        with tf.variable_scope("lm"):
            model = LanguageModel(options, False)
        with tf.Session(config=tf.ConfigProto(allow_soft_placement=True)) as sess:
            restore_checkpoint(sess, ckpt_file)
            values = {}
            for variable in tf.trainable_variables():
                name = re.sub(r":0$", "", variable.name)
                if "softmax" in name and not include_softmax:
                    continue
                values[checkpoint_variable_to_hdf5(name)] = sess.run(variable)
            if include_softmax and model.share_embedding_softmax:
                values["softmax/W"] = sess.run(model.softmax_W)

    tmp_file = os.path.join(os.path.dirname(os.path.abspath(outfile)),
                            "." + os.path.basename(outfile) + ".partial")
    with h5py.File(tmp_file, "w") as fout:
        for name in sorted(values):
            logger.info("Saving %s %s", name, list(values[name].shape))
            fout.create_dataset(name, data=values[name].astype(np.float32))
    os.replace(tmp_file, outfile)
    logger.info("wrote %s from %s", outfile, ckpt_file)

    if options_outfile is not None:
        if not options.get("bidirectional", False):
            logger.warning("%s is unidirectional: BidirectionalLanguageModel needs "
                           "both directions and will not load %s", tf_save_dir, outfile)
        _write_json(options_outfile, inference_options(options))
        logger.info("wrote the inference options %s%s", options_outfile,
                    "" if "char_cnn" in options else
                    " (word input: use use_character_inputs=False and token ids)")
