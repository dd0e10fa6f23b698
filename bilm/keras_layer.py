"""ELMo as a Keras 3 layer (TensorFlow backend). Imported on demand only:
the rest of bilm neither imports nor needs Keras.

    from bilm.keras_layer import ElmoEmbedding
    tokens = keras.Input(shape=(None,), dtype="string")       # padded with ""
    vectors = ElmoEmbedding(options_file, weight_file)(tokens)  # [B, T, 2 * proj], masked
    model = keras.Model(tokens, keras.layers.Dense(2)(
        keras.layers.GlobalAveragePooling1D()(vectors)))

Input: token strings [B, T], each row's tokens first, then "" padding; the
number of non-empty strings in a row is its length (so tokens must not be "").
Output: the ELMo vectors of `weight_layers` [B, T, 2 * proj] — a trainable
softmax-weighted mix of the biLM layers times a trainable gamma, optionally
layer-normalized over the unmasked positions — with zeros and a False mask at
padded positions. The biLM weights are frozen unless `fine_tune=True`.

Saving: `model.save("m.keras")` stores every weight (biLM included) and the
config holds the options and the weight file path; `keras.models.load_model`
(after `import bilm.keras_layer`) rebuilds the layer from the options and
restores the stored weights, so the weight file need not exist at load time.
"""
import logging
import os
from typing import Optional, Union

try:
    import keras
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("bilm.keras_layer needs Keras 3 with the TensorFlow backend "
                      "(pip install keras); the rest of bilm works without it") from err
if not keras.__version__.startswith("3."):  # pragma: no cover
    raise ImportError(f"bilm.keras_layer needs Keras 3, found keras {keras.__version__}")
if keras.backend.backend() != "tensorflow":  # pragma: no cover
    raise ImportError("bilm.keras_layer needs the TensorFlow backend of Keras, but "
                      f"KERAS_BACKEND is {keras.backend.backend()!r}")

import tensorflow as tf

from .elmo import scalar_mix
from .export import (_check_character_model, bilm_layers, bilm_variable_shapes,
                     read_bilm_weights, structure_bilm_weights,
                     tokens_to_char_ids)
from .options import load_options, lstm_settings

logger = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="bilm")
class ElmoEmbedding(keras.layers.Layer):
    """ELMo vectors of padded token strings; see the module docstring."""

    def __init__(self, options_file: Union[str, dict], weight_file: Optional[str],
                 fine_tune: bool = False, do_layer_norm: bool = False,
                 use_top_only: bool = False, l2_coef: Optional[float] = None,
                 **kwargs):
        """
        Args:
          options_file: options.json of a character model, or its parsed dict.
          weight_file: the weight hdf5; None only when the weights will be
            assigned afterwards (as `load_model` does): they start at zero.
          fine_tune: train the biLM weights too (default: frozen).
          do_layer_norm, use_top_only, l2_coef: as in `bilm.weight_layers`
            (l2_coef penalizes the mix weights W).
        """
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if isinstance(options_file, dict):
            options, source = options_file, "options"
            self._options_file = None
        else:
            options, source = load_options(options_file), options_file
            self._options_file = options_file
        self._options = _check_character_model(options, source)
        if weight_file is not None and not os.path.isfile(weight_file):
            raise FileNotFoundError(f"weight file not found: {weight_file}")
        self._weight_file = weight_file        # for get_config
        self._read_weights_from = weight_file  # None: zeros, assigned later
        self.fine_tune = fine_tune
        self.do_layer_norm = do_layer_norm
        self.use_top_only = use_top_only
        self.l2_coef = l2_coef
        self._n_mix_layers = lstm_settings(self._options)["n_layers"] + 1
        self._output_dim = 2 * self._options["lstm"]["projection_dim"]
        self._max_chars = self._options["char_cnn"]["max_characters_per_token"]
        self.supports_masking = True
        self.supports_jit = False  # string ops have no XLA kernels

    def build(self, input_shape=None) -> None:
        values = {}
        if self._read_weights_from is not None:
            values = read_bilm_weights(self._options, self._read_weights_from)
        self.bilm_weights = {}
        for hdf5_name, shape in bilm_variable_shapes(self._options).items():
            variable = self.add_weight(shape=shape, name=hdf5_name.replace("/", "_"),
                                       initializer="zeros", trainable=self.fine_tune)
            if hdf5_name in values:
                variable.assign(values[hdf5_name])
            self.bilm_weights[hdf5_name] = variable
        self.mix_weights = None
        if not self.use_top_only:
            regularizer = (keras.regularizers.L2(self.l2_coef)
                           if self.l2_coef is not None else None)
            self.mix_weights = self.add_weight(
                shape=(self._n_mix_layers,), name="ELMo_W", initializer="zeros",
                regularizer=regularizer, trainable=True)
        self.mix_gamma = self.add_weight(shape=(1,), name="ELMo_gamma", initializer="ones",
                                         trainable=True)

    def _lengths(self, tokens: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.cast(tf.not_equal(tokens, ""), tf.int32), axis=1)

    def call(self, tokens, mask=None):
        """tokens string [B, T] -> float32 [B, T, 2 * proj]."""
        tokens = tf.convert_to_tensor(tokens, tf.string)
        char_ids = tokens_to_char_ids(tokens, self._lengths(tokens), self._max_chars)
        tensors = {name: tf.convert_to_tensor(variable)
                   for name, variable in self.bilm_weights.items()}
        ops = bilm_layers(char_ids, structure_bilm_weights(self._options, tensors),
                          self._options)
        mix_weights = (None if self.mix_weights is None
                       else tf.convert_to_tensor(self.mix_weights))
        mixed = scalar_mix(ops["lm_embeddings"], ops["mask"], mix_weights,
                           tf.convert_to_tensor(self.mix_gamma),
                           do_layer_norm=self.do_layer_norm, use_top_only=self.use_top_only)
        return mixed * tf.cast(ops["mask"], mixed.dtype)[:, :, None]

    def compute_mask(self, tokens, mask=None):
        """bool [B, T]: True at the tokens, False at the "" padding."""
        # a Keras op, so that it also works on the symbolic inputs of a functional model
        return keras.ops.not_equal(tokens, "")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:2]) + (self._output_dim,)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "options_file": self._options_file,
            "options": self._options,
            "weight_file": self._weight_file,
            "fine_tune": self.fine_tune,
            "do_layer_norm": self.do_layer_norm,
            "use_top_only": self.use_top_only,
            "l2_coef": self.l2_coef,
        })
        return config

    @classmethod
    def from_config(cls, config: dict) -> "ElmoEmbedding":
        config = dict(config)
        options = config.pop("options")
        options_file = config.pop("options_file")
        weight_file = config.pop("weight_file")
        # The saved options describe the saved weights, whatever the file
        # holds now. A saved model restores every weight after this, so a
        # weight file that no longer exists is no error.
        readable = weight_file is not None and os.path.isfile(weight_file)
        if weight_file is not None and not readable:
            logger.info("weight file %s not found; the weights come from the saved model",
                        weight_file)
        layer = cls(options, weight_file if readable else None, **config)
        layer._options_file = options_file
        layer._weight_file = weight_file
        return layer
