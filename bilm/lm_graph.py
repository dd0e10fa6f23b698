"""The biLM's training and evaluation graph: `LanguageModel` and its loss.

Built from the network pieces of `layers.py` (the same char CNN, highway,
projection and LSTM cell as the inference graph) under the variable names of
the original TF1 library (SPEC §1), so checkpoints written by the original
restore here and the other way round:

  lm/char_embed | lm/embedding, lm/CNN/..., lm/CNN_high_{i}/..., lm/CNN_proj/...,
  lm/RNN_{d}/rnn/multi_rnn_cell/cell_{l}/lstm_cell/{kernel,bias,projection/kernel}
  (RNN_{d} only when bidirectional, multi_rnn_cell/cell_{l} only when
  n_layers > 1), lm/softmax/{W,b}.

What makes a step fast (same arithmetic as the original's graph): the char
CNN, highway and projection run once per distinct token of the batch (both
directions together), and each LSTM layer is unrolled over the fixed
`unroll_steps` with the input-to-gate product hoisted out of the recurrence
and a hand-written gradient (`layers.run_lstm_fixed_steps`).

Characters: training uses the char ids of `UnicodeCharsVocabulary` unshifted
(n_characters = 261). Inference shifts ids by +1 and prepends an all-zero
row to `char_embed` (n_characters = 262); `inference_options` makes that
options.json.
"""
import copy
import logging
from contextlib import ExitStack
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow.compat.v1 as tf

from .layers import (DTYPE, create_char_cnn_weights, create_lstm_weights,
                     distinct_token_embeddings, run_lstm_fixed_steps)
from .options import (N_CHARACTERS_INFERENCE, N_CHARACTERS_TRAINING, OptionsError,
                      _get, lstm_output_dim, lstm_settings, validate_options)

logger = logging.getLogger(__name__)

DTYPE_INT = tf.int64


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
        if _get(options, "checkpoint_every", int, source, required=False, default=1) < 1:
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
        embeddings = distinct_token_embeddings(ids, weights, cnn_options)
        for embedding in embeddings:
            embedding.set_shape(shape)
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
                    layer_output, final_state = run_lstm_fixed_steps(
                        cell_input, weights, init_state,
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
