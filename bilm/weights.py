"""The weight hdf5 format: names, reading with checks, and random weights.

hdf5 names (SPEC §1, also read by AllenNLP):
  char_embed [261, char_dim] (no padding row), CNN/W_cnn_{i}, CNN/b_cnn_{i},
  CNN_high_{i}/{W,b}_{carry,transform}, CNN_proj/{W,b}_proj,
  RNN_{d}/RNN/MultiRNNCell/Cell{l}/LSTMCell/{W_0, B, W_P_0}.
A token embedding file holds one dataset, embedding [vocab, proj], also
without the padding row.
"""
import os
import re
from typing import Dict, Optional, Tuple

import h5py
import numpy as np

from .files import atomic_output
from .options import lstm_output_dim

LSTM_ROOT = "RNN_{direction}/RNN/MultiRNNCell/Cell{layer}"
# TF1 LSTMCell variable suffix -> hdf5 dataset suffix
_LSTM_SUFFIXES = (
    ("lstm_cell/projection/kernel", "LSTMCell/W_P_0"),
    ("lstm_cell/kernel", "LSTMCell/W_0"),
    ("lstm_cell/bias", "LSTMCell/B"),
    # cell names of TF < 1.2 checkpoints
    ("lstm_cell/projection/weights", "LSTMCell/W_P_0"),
    ("lstm_cell/weights", "LSTMCell/W_0"),
    ("lstm_cell/biases", "LSTMCell/B"),
)


class WeightFileError(ValueError):
    """A weight hdf5 lacks a dataset or holds one of the wrong shape."""


def inference_variable_to_hdf5(variable_name: str) -> str:
    """hdf5 dataset for an inference-graph variable.

    'bilm/CNN/W_cnn_0' -> 'CNN/W_cnn_0';
    'bilm/RNN_0/RNN/MultiRNNCell/Cell1/rnn/lstm_cell/kernel'
      -> 'RNN_0/RNN/MultiRNNCell/Cell1/LSTMCell/W_0'.
    """
    name = re.sub(r":0$", "", variable_name)
    # the user may have built the model inside scopes of their own
    name = name[name.index("bilm/") + len("bilm/"):] if "bilm/" in name else name
    for tf_suffix, hdf5_suffix in _LSTM_SUFFIXES:
        if name.endswith("/rnn/" + tf_suffix):
            return name[:-len("/rnn/" + tf_suffix)] + "/" + hdf5_suffix
    return name


def checkpoint_variable_to_hdf5(variable_name: str) -> str:
    """hdf5 dataset for a training-checkpoint variable (SPEC §1 names).

    'lm/RNN_1/rnn/multi_rnn_cell/cell_0/lstm_cell/kernel'
      -> 'RNN_1/RNN/MultiRNNCell/Cell0/LSTMCell/W_0';
    'lm/CNN_high_0/W_carry' -> 'CNN_high_0/W_carry'.
    A unidirectional model (no RNN_{d} scope) maps to RNN_0, and a one-layer
    model (no multi_rnn_cell level) to Cell0, so that every dumped file has
    the layout the inference graph reads.
    """
    name = re.sub(r":0$", "", variable_name)
    if name.startswith("lm/"):
        name = name[len("lm/"):]
    match = re.match(r"^(?:(RNN_\d+)/)?rnn/(?:multi_rnn_cell/cell_(\d+)/)?(lstm_cell/.*)$",
                     name)
    if not match:
        return name
    direction, layer, cell_name = match.groups()
    root = LSTM_ROOT.format(direction=(direction or "RNN_0")[len("RNN_"):],
                            layer=layer or 0)
    for tf_suffix, hdf5_suffix in _LSTM_SUFFIXES:
        if cell_name == tf_suffix:
            return f"{root}/{hdf5_suffix}"
    raise WeightFileError(f"unknown LSTM variable in checkpoint: {variable_name}")


class WeightReader:
    """Reads datasets from a weight hdf5 once, checking names and shapes."""

    def __init__(self, weight_file: str, embedding_weight_file: Optional[str] = None):
        for path in (weight_file, embedding_weight_file):
            if path is not None and not os.path.isfile(path):
                raise FileNotFoundError(f"weight file not found: {path}")
        self.weight_file = weight_file
        self.embedding_weight_file = embedding_weight_file

    def embedding_shape(self) -> Tuple[int, int]:
        """Shape of the token embedding dataset [vocab, dim] (no padding row)."""
        return self._dataset_shape(self.embedding_weight_file, "embedding")

    def check(self, name: str, shape) -> None:
        """Check from the file's metadata that dataset `name` exists and fits
        the graph's variable of `shape`; WeightFileError naming both if not.

        `name` is an hdf5 dataset name; the graph's 'char_embed' and
        'embedding' have one row more than the file (row 0, "no token").
        """
        shape = tuple(int(d) for d in shape)
        path = self._path(name)
        file_shape = self._dataset_shape(path, name)
        if name in ("char_embed", "embedding"):
            shape = (shape[0] - 1,) + shape[1:]
        if file_shape != shape:
            raise WeightFileError(
                f"{path}: dataset '{name}' has shape {file_shape} but "
                f"options.json requires {shape}")

    def read(self, name: str, shape) -> np.ndarray:
        """Values for the graph's variable of `shape` from dataset `name`,
        with the zero row 0 prepended to 'char_embed' and 'embedding'."""
        self.check(name, shape)
        with self._open(self._path(name)) as fin:
            values = np.asarray(fin[name][...], dtype=np.float32)
        if name in ("char_embed", "embedding"):
            values = np.concatenate([np.zeros_like(values[:1]), values])
        return values

    def _path(self, name: str) -> str:
        return self.embedding_weight_file if name == "embedding" else self.weight_file

    @staticmethod
    def _open(path: str) -> h5py.File:
        try:
            return h5py.File(path, "r")
        except OSError as err:
            raise WeightFileError(f"{path}: not a readable hdf5 file ({err})") from None

    def _dataset_shape(self, path: str, name: str) -> Tuple[int, ...]:
        with self._open(path) as fin:
            if name not in fin or not isinstance(fin[name], h5py.Dataset):
                raise WeightFileError(f"{path}: missing dataset '{name}'")
            return tuple(fin[name].shape)


def inference_weight_shapes(options: dict) -> Dict[str, Tuple[int, ...]]:
    """Every dataset of an inference weight file for `options`, with its shape."""
    lstm = options["lstm"]
    lstm_dim, projection_dim = lstm["dim"], lstm["projection_dim"]
    out_dim = lstm_output_dim(lstm_dim, projection_dim)
    shapes = {}
    input_dim = projection_dim
    cnn = options.get("char_cnn")
    if cnn is not None:
        char_dim = cnn["embedding"]["dim"]
        shapes["char_embed"] = (cnn["n_characters"] - 1, char_dim)
        for i, (width, count) in enumerate(cnn["filters"]):
            shapes[f"CNN/W_cnn_{i}"] = (1, width, char_dim, count)
            shapes[f"CNN/b_cnn_{i}"] = (count,)
        n_filters = sum(count for _, count in cnn["filters"])
        for i in range(cnn.get("n_highway") or 0):
            for gate in ("carry", "transform"):
                shapes[f"CNN_high_{i}/W_{gate}"] = (n_filters, n_filters)
                shapes[f"CNN_high_{i}/b_{gate}"] = (n_filters,)
        if n_filters != projection_dim:
            shapes["CNN_proj/W_proj"] = (n_filters, projection_dim)
            shapes["CNN_proj/b_proj"] = (projection_dim,)
    for direction in range(2):
        layer_input = input_dim
        for layer in range(lstm.get("n_layers", 1)):
            root = LSTM_ROOT.format(direction=direction, layer=layer)
            shapes[f"{root}/LSTMCell/W_0"] = (layer_input + out_dim, 4 * lstm_dim)
            shapes[f"{root}/LSTMCell/B"] = (4 * lstm_dim,)
            if projection_dim < lstm_dim:
                shapes[f"{root}/LSTMCell/W_P_0"] = (lstm_dim, projection_dim)
            layer_input = out_dim
    return shapes


def check_inference_weights(options: dict, weight_file: str) -> None:
    """Check from the file's metadata (no values are read) that `weight_file`
    is a readable hdf5 holding every dataset the inference graph of `options`
    reads, each of the shape it needs; WeightFileError naming the file, the
    dataset and both shapes if not. Extra datasets (softmax/W, ...) are fine."""
    reader = WeightReader(weight_file)
    for name, shape in inference_weight_shapes(options).items():
        if name == "char_embed":  # check() takes the graph's shape: one row more
            shape = (shape[0] + 1,) + shape[1:]
        reader.check(name, shape)


def write_random_weights(options: dict, weight_file: str, seed: int = 0) -> None:
    """Write a complete inference weight hdf5 for `options` with random values.

    Scales follow the training initializers (uniform ±1 char embeddings,
    ±0.05 relu filters, 1/sqrt(fan-in) dense layers, Glorot LSTM kernels), so
    activations look like a trained model's. The same seed gives the same file.
    The file is written under a temporary name and renamed when complete.
    """
    rng = np.random.default_rng(seed)
    with atomic_output(weight_file) as tmp_file, h5py.File(tmp_file, "w") as fout:
        for name, shape in inference_weight_shapes(options).items():
            fout.create_dataset(name, data=_random_values(name, shape, rng))


def _random_values(name: str, shape: Tuple[int, ...], rng) -> np.ndarray:
    if name == "char_embed":
        values = rng.uniform(-1.0, 1.0, shape)
    elif name.startswith("CNN/W_cnn"):
        values = rng.uniform(-0.05, 0.05, shape) * 10  # livelier than relu init
    elif name.endswith("b_carry"):
        values = np.full(shape, -2.0)
    elif name.endswith("/W_0") or name.endswith("/W_P_0"):
        limit = np.sqrt(6.0 / (shape[0] + shape[1]))
        values = rng.uniform(-limit, limit, shape)
    elif len(shape) == 2:
        values = rng.normal(0.0, np.sqrt(1.0 / shape[0]), shape)
    else:
        values = rng.normal(0.0, 0.1, shape)
    return values.astype(np.float32)
