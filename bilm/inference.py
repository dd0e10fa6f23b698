"""The pretrained biLM's inference graph.

`BidirectionalLanguageModel(options_file, weight_file)` is called on an int
placeholder of character ids [B, T, C] (from `Batcher`) or token ids [B, T]
(from `TokenBatcher`) and returns the ops of SPEC §3. The model is stateful:
each direction/layer keeps (c, h) in non-trainable variables of
[max_batch_size, dim] and a batch of size b starts from, and writes back to,
rows [:b]. `bilm.model` is the public home of these names (as in the
original library), next to the embedding dumps.
"""
import logging
from typing import Dict, Optional

import tensorflow.compat.v1 as tf

from .layers import (DTYPE, bilm_outputs, char_cnn, create_char_cnn_weights,
                     create_lstm_weights, distinct_token_embeddings, reverse_sequences,
                     run_lstm)
from .options import (N_CHARACTERS_INFERENCE, load_and_validate, lstm_output_dim,
                      lstm_settings)
from .weights import WeightReader, inference_variable_to_hdf5

logger = logging.getLogger(__name__)
DIRECTIONS = ("forward", "backward")



class BidirectionalLanguageModel:
    """A pretrained biLM; call it on an ids placeholder to get its ops."""

    def __init__(self, options_file: str, weight_file: str,
                 use_character_inputs: bool = True,
                 embedding_weight_file: Optional[str] = None,
                 max_batch_size: int = 128, stateless: bool = False):
        """
        Args:
          options_file: options.json of the model (n_characters 262).
          weight_file: the weight hdf5.
          use_character_inputs: True for character ids [B, T, C], False for
            token ids [B, T] looked up in `embedding_weight_file`.
          embedding_weight_file: token embedding hdf5 (see
            `dump_token_embeddings`); for token input it defaults to
            `weight_file` when that file holds an `embedding` dataset (as the
            weights of a word-input model do).
          max_batch_size: rows of the LSTM state variables; no batch may be larger.
          stateless: start every batch from zero LSTM states and keep no state
            between batches, so a sentence always gets the same vectors
            whatever ran before (the original is stateful: the default).
        """
        required_chars = N_CHARACTERS_INFERENCE if use_character_inputs else None
        self._options = load_and_validate(options_file, n_characters=required_chars)
        if use_character_inputs and "char_cnn" not in self._options:
            raise ValueError(f"{options_file} has no 'char_cnn' section: this is "
                             "a word-input model, use use_character_inputs=False")
        if not use_character_inputs and embedding_weight_file is None:
            embedding_weight_file = weight_file
        if not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be a positive int, got {max_batch_size!r}")
        self._reader = WeightReader(weight_file, embedding_weight_file)
        if not use_character_inputs:
            self._reader.embedding_shape()  # fail now if there is no embedding
        self._weight_file = weight_file
        self._embedding_weight_file = embedding_weight_file
        self._use_character_inputs = use_character_inputs
        self._max_batch_size = max_batch_size
        self._stateless = stateless
        self._ops = {}
        self._graphs = {}

    def __call__(self, ids_placeholder: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Ops for `ids_placeholder`; calling again on another placeholder
        reuses the same weights (and has its own LSTM states).

        Returns a dict:
          'lm_embeddings': float32 [B, n_layers + 1, T - 2, 2 * proj]
          'lengths': int32 [B], tokens per sentence without <S> and </S>
          'mask': bool [B, T - 2]
          'token_embeddings': float32 [B, T, proj] (with <S> and </S>)
        """
        if ids_placeholder in self._ops:
            return self._ops[ids_placeholder]
        graph_args = dict(use_character_inputs=self._use_character_inputs,
                          max_batch_size=self._max_batch_size, reader=self._reader,
                          stateless=self._stateless)
        if not self._ops:
            lm_graph = BidirectionalLanguageModelGraph(
                self._options, self._weight_file, ids_placeholder,
                embedding_weight_file=self._embedding_weight_file, **graph_args)
        else:
            with tf.variable_scope("", reuse=True):
                lm_graph = BidirectionalLanguageModelGraph(
                    self._options, self._weight_file, ids_placeholder,
                    embedding_weight_file=self._embedding_weight_file, **graph_args)
        ops = _build_ops(lm_graph)
        self._ops[ids_placeholder] = ops
        self._graphs[ids_placeholder] = lm_graph
        return ops


def _build_ops(lm_graph: "BidirectionalLanguageModelGraph") -> Dict[str, tf.Tensor]:
    # every output waits for the LSTM states to be written back
    with tf.control_dependencies([lm_graph.update_state_op]):
        return bilm_outputs(lm_graph.embedding, lm_graph.lstm_outputs["forward"],
                            lm_graph.lstm_outputs["backward"], lm_graph.mask,
                            lm_graph.sequence_lengths)


class BidirectionalLanguageModelGraph:
    """The biLM graph for one ids placeholder.

    Attributes read by downstream code and tests (lists indexed by layer):
      embedding [B, T, proj]; mask bool [B, T]; sequence_lengths int32 [B];
      lstm_outputs[direction] [B, T, out_dim] (backward ones re-reversed to
      input order); lstm_init_states[direction] [c_var, h_var] of
      [max_batch_size, dim] / [max_batch_size, out_dim];
      lstm_final_states[direction] (c, h) of [B, ...]; lstm_state_sizes;
      update_state_op.
    """

    def __init__(self, options: dict, weight_file: str, ids_placeholder: tf.Tensor,
                 use_character_inputs: bool = True,
                 embedding_weight_file: Optional[str] = None,
                 max_batch_size: int = 128, reader: Optional[WeightReader] = None,
                 stateless: bool = False):
        self.options = options
        self.stateless = stateless
        self._max_batch_size = max_batch_size
        self.use_character_inputs = use_character_inputs
        self.ids_placeholder = _check_ids(ids_placeholder, options, use_character_inputs)
        reader = reader or WeightReader(weight_file, embedding_weight_file)

        def load_pretrained(getter, name, *args, **kwargs):
            kwargs["trainable"] = False
            kwargs["initializer"] = _hdf5_initializer(reader, inference_variable_to_hdf5(name))
            return getter(name, *args, **kwargs)

        if not use_character_inputs:
            self._n_tokens_vocab = reader.embedding_shape()[0] + 1  # +1: padding row
        else:
            self._n_tokens_vocab = None
        with tf.variable_scope("bilm", custom_getter=load_pretrained):
            self._build()

    def _build(self) -> None:
        projection_dim = self.options["lstm"]["projection_dim"]
        if self.use_character_inputs:
            cnn_options = self.options["char_cnn"]
            weights = create_char_cnn_weights(cnn_options, projection_dim)
            if self.stateless:
                # batches of many sentences repeat tokens: embed each once
                self.embedding, = distinct_token_embeddings([self.ids_placeholder], weights,
                                                            cnn_options)
            else:
                self.embedding = char_cnn(self.ids_placeholder, weights, cnn_options)
            self.mask = tf.reduce_any(self.ids_placeholder > 0, axis=2)
        else:
            self.embedding_weights = tf.get_variable(
                "embedding", [self._n_tokens_vocab, projection_dim], dtype=DTYPE)
            self.embedding = tf.nn.embedding_lookup(self.embedding_weights,
                                                    self.ids_placeholder)
            self.mask = self.ids_placeholder > 0
        self.sequence_lengths = tf.reduce_sum(tf.cast(self.mask, tf.int32), axis=1)
        self._build_lstms()

    def _build_lstms(self) -> None:
        settings = lstm_settings(self.options)
        lstm_dim, projection_dim = settings["dim"], settings["projection_dim"]
        out_dim = lstm_output_dim(lstm_dim, projection_dim)
        if settings["use_skip_connections"]:
            logger.info("using skip connections")
        lengths = self.sequence_lengths
        batch_size = tf.shape(lengths)[0]

        self.lstm_outputs = {d: [] for d in DIRECTIONS}
        self.lstm_state_sizes = {d: [] for d in DIRECTIONS}
        self.lstm_init_states = {d: [] for d in DIRECTIONS}
        self.lstm_final_states = {d: [] for d in DIRECTIONS}
        update_ops = []
        for i_direction, direction in enumerate(DIRECTIONS):
            layer_input = self.embedding
            if direction == "backward":
                layer_input = reverse_sequences(layer_input, lengths)
            for layer in range(settings["n_layers"]):
                if self.stateless:
                    state_vars = []
                    batch_init_state = [tf.zeros([batch_size, dim])
                                        for dim in (lstm_dim, out_dim)]
                else:
                    state_vars = [
                        tf.Variable(tf.zeros([self._max_batch_size, dim]),
                                    trainable=False,
                                    name=f"lstm_state_{direction}_{layer}_{part}")
                        for dim, part in ((lstm_dim, "c"), (out_dim, "h"))]
                    with tf.control_dependencies([self._check_batch_size(batch_size)]):
                        batch_init_state = [state[:batch_size] for state in state_vars]
                scope = f"RNN_{i_direction}/RNN/MultiRNNCell/Cell{layer}"
                with tf.variable_scope(scope), tf.variable_scope("rnn"):
                    cell_weights = create_lstm_weights(
                        int(layer_input.shape[-1]), lstm_dim, projection_dim)
                layer_output, final_state = run_lstm(
                    layer_input, cell_weights, batch_init_state, lengths,
                    settings["cell_clip"], settings["proj_clip"],
                    residual=settings["use_skip_connections"] and layer > 0,
                    # the faithful stateful path rounds as TF1 did; batched
                    # stateless runs take the faster hoisted product
                    tf1_gate_order=not self.stateless)

                self.lstm_state_sizes[direction].append((lstm_dim, out_dim))
                self.lstm_init_states[direction].append(state_vars)
                self.lstm_final_states[direction].append(final_state)
                if direction == "backward":
                    self.lstm_outputs[direction].append(
                        reverse_sequences(layer_output, lengths))
                else:
                    self.lstm_outputs[direction].append(layer_output)
                with tf.control_dependencies([layer_output]):
                    for state_var, final in zip(state_vars, final_state):
                        # rows past the batch keep their values
                        new_state = tf.concat([final, state_var[batch_size:]], axis=0)
                        update_ops.append(tf.assign(state_var, new_state))
                layer_input = layer_output
        self.update_state_op = tf.group(*update_ops)

    def _check_batch_size(self, batch_size: tf.Tensor) -> tf.Operation:
        """Fails the run with a clear message when the batch has more rows
        than the state variables."""
        return tf.debugging.assert_less_equal(
            batch_size, self._max_batch_size,
            message=f"batch is larger than max_batch_size={self._max_batch_size} "
                    "given to BidirectionalLanguageModel")


def _hdf5_initializer(reader: WeightReader, hdf5_name: str):
    """Initializer that reads dataset `hdf5_name` when the initializer runs.

    The shape is checked now, against the file's metadata; the values stay
    out of the graph (a full-size model would add 375 MB of constants to
    it, which takes longer to build than to read the file at run time).
    """
    def initializer(shape, dtype=None, partition_info=None):
        reader.check(hdf5_name, shape)
        values = tf.numpy_function(lambda: reader.read(hdf5_name, shape), [], tf.float32,
                                   name="read_" + hdf5_name.replace("/", "_"))
        values.set_shape(shape)
        return values
    return initializer


def _check_ids(ids: tf.Tensor, options: dict, use_character_inputs: bool) -> tf.Tensor:
    """Check the ids placeholder's rank and dtype against the model."""
    if not isinstance(ids, tf.Tensor):
        raise TypeError(f"ids_placeholder must be a tf.Tensor, got {type(ids).__name__}")
    if not ids.dtype.is_integer:
        raise TypeError(f"ids_placeholder must be int32 or int64, got {ids.dtype.name}")
    if use_character_inputs:
        max_chars = options["char_cnn"]["max_characters_per_token"]
        shape = ids.shape
        if shape.rank is not None and shape.rank != 3:
            raise ValueError("character ids must have shape [batch, time, "
                             f"{max_chars}], got rank {shape.rank} ({shape})")
        if shape.rank == 3 and shape[2] is not None and shape[2] != max_chars:
            raise ValueError(f"character ids have {shape[2]} characters per "
                             f"token but options.json says {max_chars}")
    elif ids.shape.rank is not None and ids.shape.rank != 2:
        raise ValueError("token ids must have shape [batch, time], got rank "
                         f"{ids.shape.rank} ({ids.shape})")
    return ids
