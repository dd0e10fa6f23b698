"""ELMo in TensorFlow 2 code: an eager/tf.function module and a SavedModel export.

`ElmoModule(options_file, weight_file)` holds the biLM weights as tf.Variables
and exposes two tf.functions with the signatures of TF Hub's ELMo module:

    module.default(strings)                  # string [B], split on spaces
    module.tokens(tokens, sequence_len)      # string [B, T] padded with "", int32 [B]

Each returns {'word_emb' [B, T, proj], 'lstm_outputs1' .. 'lstm_outputsN'
[B, T, 2 * proj], 'elmo' [B, T, 2 * proj], 'default' [B, 2 * proj],
'sequence_len' int32 [B]}. Character ids are computed inside the graph exactly
as `Batcher` computes them, and the network is built by the functions of
`bilm/layers.py`, stacked as the stateless `BidirectionalLanguageModel`.

`export_saved_model(options_file, weight_file, export_dir)` writes the module
as a SavedModel that `tf.saved_model.load(export_dir)` runs without bilm:

    bilm export --options options.json --weights weights.hdf5 OUT_DIR
    bilm export OUT_DIR            # the bundled model
"""
import logging
import os
import secrets
import shutil
from typing import Dict, List, Mapping

import numpy as np
import tensorflow as tf

from .elmo import scalar_mix
from .layers import (DTYPE, LSTMWeights, bilm_outputs, char_cnn, reverse_sequences,
                     run_lstm)
from .options import (N_CHARACTERS_INFERENCE, OptionsError, load_and_validate,
                      lstm_output_dim, lstm_settings, validate_options)
from .weights import LSTM_ROOT, WeightReader, inference_weight_shapes

logger = logging.getLogger(__name__)

# Character ids of data.UnicodeCharsVocabulary, before the +1 shift.
BOS_CHAR, EOS_CHAR, BOW_CHAR, EOW_CHAR, PAD_CHAR = 256, 257, 258, 259, 260
DIRECTIONS = ("forward", "backward")
MIX_WEIGHTS_NAME = "ELMo_W"
MIX_GAMMA_NAME = "ELMo_gamma"


# ---------------------------------------------------------------------------
# Strings -> character ids, inside the graph
# ---------------------------------------------------------------------------

def split_sentences(strings: tf.Tensor):
    """Untokenized sentences -> padded tokens, as TF Hub's `default` signature.

    Splits on the space character only; runs of spaces and leading/trailing
    spaces give no empty tokens (TF1 `tf.string_split`).
    Args:
      strings: string [B].
    Returns:
      tokens string [B, T] padded with "", sequence_len int32 [B].
    """
    pieces = tf.strings.split(strings, sep=" ")
    pieces = tf.ragged.boolean_mask(pieces, tf.not_equal(pieces, ""))
    sequence_len = tf.cast(pieces.row_lengths(), tf.int32)
    return pieces.to_tensor(default_value=""), sequence_len


def _boundary_char_ids(char_id: int, max_chars: int) -> List[int]:
    return [BOW_CHAR, char_id, EOW_CHAR] + [PAD_CHAR] * (max_chars - 3)


def tokens_to_char_ids(tokens: tf.Tensor, sequence_len: tf.Tensor,
                       max_chars: int) -> tf.Tensor:
    """Character ids of padded token strings, equal to `Batcher.batch_sentences`.

    A token's ids are [bow, its UTF-8 bytes truncated to max_chars - 2, eow,
    pad...], each +1; the tokens "<S>" and "</S>" get the boundary ids (as
    `Batcher` does with a vocabulary holding them, i.e. every ELMo vocabulary).
    Each row is wrapped in <S> ... </S>; positions past them are 0.
    Args:
      tokens: string [B, T]; positions >= sequence_len are ignored.
      sequence_len: int [B], 0 <= sequence_len <= T.
    Returns:
      int32 [B, T + 2, max_chars].
    """
    tokens = tf.convert_to_tensor(tokens, tf.string)
    sequence_len = tf.cast(sequence_len, tf.int32)
    n_steps = tf.shape(tokens)[1]
    checks = [
        tf.debugging.assert_non_negative(sequence_len, message="sequence_len must be >= 0"),
        tf.debugging.assert_less_equal(
            sequence_len, n_steps,
            message="sequence_len must not exceed the number of token columns"),
    ]
    with tf.control_dependencies(checks):
        sequence_len = tf.identity(sequence_len)

    max_bytes = max_chars - 2
    token_bytes = tf.strings.substr(tokens, 0, max_bytes, unit="BYTE")
    n_bytes = tf.strings.length(token_bytes, unit="BYTE")[:, :, None]   # [B, T, 1]
    byte_values = tf.cast(tf.io.decode_raw(token_bytes, tf.uint8, fixed_length=max_bytes),
                          tf.int32)                                       # [B, T, max_bytes]
    # position p holds byte p - 1
    byte_values = tf.pad(byte_values, [[0, 0], [0, 0], [1, 1]])
    position = tf.range(max_chars)
    char_ids = tf.where(position <= n_bytes, byte_values, PAD_CHAR)
    char_ids = tf.where(position == n_bytes + 1, EOW_CHAR, char_ids)
    char_ids = tf.where(position == 0, BOW_CHAR, char_ids)
    for token, boundary in (("<S>", BOS_CHAR), ("</S>", EOS_CHAR)):
        char_ids = tf.where(tf.equal(tokens, token)[:, :, None],
                            tf.constant(_boundary_char_ids(boundary, max_chars)), char_ids)
    # +1 so that 0 means "no token"
    is_token = tf.sequence_mask(sequence_len, n_steps)[:, :, None]
    char_ids = tf.where(is_token, char_ids + 1, 0)

    batch_size = tf.shape(tokens)[0]
    bos = tf.constant(_boundary_char_ids(BOS_CHAR, max_chars)) + 1
    eos = tf.constant(_boundary_char_ids(EOS_CHAR, max_chars)) + 1
    char_ids = tf.concat([tf.tile(bos[None, None], [batch_size, 1, 1]), char_ids,
                          tf.zeros([batch_size, 1, max_chars], tf.int32)], axis=1)
    is_eos = tf.one_hot(sequence_len + 1, n_steps + 2, on_value=True, off_value=False)
    return tf.where(is_eos[:, :, None], eos, char_ids)


# ---------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------

def bilm_variable_shapes(options: dict) -> Dict[str, tuple]:
    """hdf5 dataset name -> shape of its variable (char_embed with its zero row 0)."""
    shapes = dict(inference_weight_shapes(options))
    rows, dim = shapes["char_embed"]
    shapes["char_embed"] = (rows + 1, dim)
    return shapes


def read_bilm_weights(options: dict, weight_file: str) -> Dict[str, np.ndarray]:
    """Every biLM weight from `weight_file`, keyed by hdf5 dataset name, with
    the shape of `bilm_variable_shapes` (errors name the file and dataset)."""
    reader = WeightReader(weight_file)
    return {name: reader.read(name, shape)
            for name, shape in bilm_variable_shapes(options).items()}


def structure_bilm_weights(options: dict, variables: Mapping[str, object]) -> dict:
    """Arrange flat {hdf5 name: variable or tensor} as the layers.py functions
    take them: {'char_cnn': char_cnn weights dict, 'lstm': {direction: [LSTMWeights]}}."""
    cnn_options = options["char_cnn"]
    char_cnn_weights = {
        "char_embed": variables["char_embed"],
        "cnn": [(variables[f"CNN/W_cnn_{i}"], variables[f"CNN/b_cnn_{i}"])
                for i in range(len(cnn_options["filters"]))],
        "highway": [{key: variables[f"CNN_high_{i}/{key}"]
                     for key in ("W_carry", "b_carry", "W_transform", "b_transform")}
                    for i in range(cnn_options.get("n_highway") or 0)],
        "projection": ((variables["CNN_proj/W_proj"], variables["CNN_proj/b_proj"])
                       if "CNN_proj/W_proj" in variables else None),
    }
    lstm = {}
    for i_direction, direction in enumerate(DIRECTIONS):
        lstm[direction] = []
        for layer in range(lstm_settings(options)["n_layers"]):
            root = LSTM_ROOT.format(direction=i_direction, layer=layer)
            lstm[direction].append(LSTMWeights(
                variables[f"{root}/LSTMCell/W_0"], variables[f"{root}/LSTMCell/B"],
                variables.get(f"{root}/LSTMCell/W_P_0")))
    return {"char_cnn": char_cnn_weights, "lstm": lstm}


def _check_character_model(options: dict, source: str) -> dict:
    validate_options(options, source, n_characters=N_CHARACTERS_INFERENCE)
    if "char_cnn" not in options:
        raise OptionsError(f"{source} has no 'char_cnn' section: only character "
                           "models can take strings (a word-input model needs a "
                           "vocabulary lookup, which this export does not build)")
    return options


# ---------------------------------------------------------------------------
# The biLM and the layer mix on tensors
# ---------------------------------------------------------------------------

def bilm_layers(char_ids: tf.Tensor, weights: dict, options: dict) -> Dict[str, tf.Tensor]:
    """The stateless biLM (zero initial LSTM states) on character ids.

    Stacks the layers.py pieces as `BidirectionalLanguageModelGraph` does.
    Args:
      char_ids: int [B, T, max_chars] from `Batcher` or `tokens_to_char_ids`.
      weights: from `structure_bilm_weights`.
    Returns:
      {'lm_embeddings' float32 [B, n_layers + 1, T - 2, 2 * proj],
       'mask' bool [B, T - 2], 'lengths' int32 [B] (without <S>, </S>),
       'token_embeddings' float32 [B, T, proj]} — the ops of
      `BidirectionalLanguageModel(..., stateless=True)`.
    """
    settings = lstm_settings(options)
    token_mask = tf.reduce_any(char_ids > 0, axis=2)
    lengths = tf.reduce_sum(tf.cast(token_mask, tf.int32), axis=1)
    batch_size = tf.shape(lengths)[0]
    embedding = char_cnn(char_ids, weights["char_cnn"], options["char_cnn"])
    out_dim = lstm_output_dim(settings["dim"], settings["projection_dim"])

    lstm_outputs = {}
    for direction in DIRECTIONS:
        layer_input = embedding
        if direction == "backward":
            layer_input = reverse_sequences(layer_input, lengths)
        lstm_outputs[direction] = []
        for layer, cell_weights in enumerate(weights["lstm"][direction]):
            initial_state = [tf.zeros([batch_size, dim], DTYPE)
                             for dim in (settings["dim"], out_dim)]
            layer_output, _ = run_lstm(
                layer_input, cell_weights, initial_state, lengths,
                settings["cell_clip"], settings["proj_clip"],
                residual=settings["use_skip_connections"] and layer > 0)
            lstm_outputs[direction].append(
                reverse_sequences(layer_output, lengths) if direction == "backward"
                else layer_output)
            layer_input = layer_output

    return bilm_outputs(embedding, lstm_outputs["forward"], lstm_outputs["backward"],
                        token_mask, lengths)


# ---------------------------------------------------------------------------
# The module
# ---------------------------------------------------------------------------

class ElmoModule(tf.Module):
    """ELMo for eager TF2 code and SavedModels, with TF Hub's ELMo signatures.

    Variables: the biLM weights (trainable only with `trainable_bilm`) and the
    trainable layer mix `ELMo_W` [n_layers + 1] (zeros) and `ELMo_gamma` [1]
    (ones), i.e. `weight_layers` starting at the even mix.

    Keep a reference to the module while using its functions: a tf.function
    method holds its object weakly, so `ElmoModule(...).tokens(...)` fails.
    """

    def __init__(self, options_file: str, weight_file: str, trainable_bilm: bool = False,
                 name: str = "elmo"):
        super().__init__(name=name)
        options = _check_character_model(load_and_validate(options_file), options_file)
        self._options = options
        self._max_chars = options["char_cnn"]["max_characters_per_token"]
        self._projection_dim = options["lstm"]["projection_dim"]
        self._n_layers = lstm_settings(options)["n_layers"]
        values = read_bilm_weights(options, weight_file)
        with self.name_scope:
            self.bilm_variables = {
                hdf5_name: tf.Variable(value, trainable=trainable_bilm,
                                       name=hdf5_name.replace("/", "_"))
                for hdf5_name, value in values.items()}
            self.mix_weights = tf.Variable(tf.zeros([self._n_layers + 1]), name=MIX_WEIGHTS_NAME)
            self.mix_gamma = tf.Variable(tf.ones([1]), name=MIX_GAMMA_NAME)
        # kept in the SavedModel's assets/ so the export says what it holds
        self.options_asset = tf.saved_model.Asset(options_file)

    @tf.function(autograph=False, input_signature=[
        tf.TensorSpec([None, None, None], tf.int32, name="char_ids")])
    def bilm(self, char_ids: tf.Tensor) -> Dict[str, tf.Tensor]:
        """The ops of `BidirectionalLanguageModel(..., stateless=True)` on `Batcher`
        ids int32 [B, T, max_chars]: lm_embeddings, mask, lengths, token_embeddings."""
        weights = structure_bilm_weights(self._options, self.bilm_variables)
        return bilm_layers(char_ids, weights, self._options)

    @tf.function(autograph=False, input_signature=[
        tf.TensorSpec([None, None], tf.string, name="tokens"),
        tf.TensorSpec([None], tf.int32, name="sequence_len")])
    def tokens(self, tokens: tf.Tensor, sequence_len: tf.Tensor) -> Dict[str, tf.Tensor]:
        """TF Hub's `tokens` signature: tokens string [B, T] padded with "",
        sequence_len int32 [B] -> the output dict (see module docstring)."""
        return self._outputs(tokens, sequence_len)

    @tf.function(autograph=False, input_signature=[
        tf.TensorSpec([None], tf.string, name="strings")])
    def default(self, strings: tf.Tensor) -> Dict[str, tf.Tensor]:
        """TF Hub's `default` signature: sentences string [B], split on spaces."""
        tokens, sequence_len = split_sentences(strings)
        return self._outputs(tokens, sequence_len)

    def _outputs(self, tokens: tf.Tensor, sequence_len: tf.Tensor) -> Dict[str, tf.Tensor]:
        char_ids = tokens_to_char_ids(tokens, sequence_len, self._max_chars)
        weights = structure_bilm_weights(self._options, self.bilm_variables)
        ops = bilm_layers(char_ids, weights, self._options)
        lm_embeddings, mask = ops["lm_embeddings"], ops["mask"]
        elmo = scalar_mix(lm_embeddings, mask, self.mix_weights, self.mix_gamma)
        mask_float = tf.cast(mask, DTYPE)[:, :, None]
        # a sentence without tokens gets zeros, not 0/0
        mean = tf.math.divide_no_nan(tf.reduce_sum(elmo * mask_float, axis=1),
                                     tf.reduce_sum(mask_float, axis=1))
        outputs = {"word_emb": lm_embeddings[:, 0, :, :self._projection_dim]}
        for layer in range(1, self._n_layers + 1):
            outputs[f"lstm_outputs{layer}"] = lm_embeddings[:, layer]
        outputs.update({"elmo": elmo, "default": mean, "sequence_len": ops["lengths"]})
        return outputs


def export_saved_model(options_file: str, weight_file: str, export_dir: str) -> str:
    """Write ELMo as a TF2 SavedModel with TF Hub's `default` and `tokens`
    signatures; returns `export_dir`.

    Load it with TensorFlow alone:
        elmo = tf.saved_model.load(export_dir)
        elmo.signatures["default"](tf.constant(["the cat sat"]))["elmo"]
        elmo.signatures["tokens"](tokens=..., sequence_len=...)["elmo"]
    """
    _check_export_dir(export_dir)  # before reading the weights
    module = ElmoModule(options_file, weight_file)
    signatures = {"default": module.default.get_concrete_function(),
                  "tokens": module.tokens.get_concrete_function()}
    # A tf.Module's variable properties are not saved; this root carries them
    # as lists (TF Hub's reusable SavedModel attributes) next to the functions.
    root = tf.train.Checkpoint(elmo=module)
    root.default, root.tokens, root.bilm = module.default, module.tokens, module.bilm
    root.variables = list(module.variables)
    root.trainable_variables = list(module.trainable_variables)
    root.regularization_losses = []
    root.options_asset = module.options_asset
    _save_atomically(root, export_dir, signatures)
    logger.info("exported %s to %s (%.1f MB)", weight_file, export_dir,
                directory_size(export_dir) / 1e6)
    return export_dir


def _check_export_dir(export_dir: str) -> None:
    if os.path.exists(export_dir) and (not os.path.isdir(export_dir)
                                       or os.listdir(export_dir)):
        raise FileExistsError(f"{export_dir} exists and is not an empty directory")


def _save_atomically(root, export_dir: str, signatures: dict) -> None:
    """Save under a temporary name next to `export_dir`, then rename, so an
    interrupted export leaves no half-written SavedModel at `export_dir`."""
    export_dir = os.path.abspath(export_dir)
    _check_export_dir(export_dir)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = os.path.join(parent, f".{os.path.basename(export_dir)}.{os.getpid()}."
                                   f"{secrets.token_hex(4)}.partial")
    try:
        os.mkdir(tmp_dir)  # unlike mkdtemp, honours the umask
        tf.saved_model.save(root, tmp_dir, signatures=signatures)
        if os.path.isdir(export_dir):
            os.rmdir(export_dir)  # empty, checked above
        os.replace(tmp_dir, export_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def directory_size(path: str) -> int:
    """Bytes of all files under `path`."""
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)
