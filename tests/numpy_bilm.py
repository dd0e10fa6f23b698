"""An independent NumPy implementation of the biLM inference forward pass.

Written from SPEC section 3 (and the TF1 ``LSTMCell`` semantics) without
TensorFlow, to check ``bilm.model`` against something that shares none of its
code. It favours clarity over speed: plain loops over time steps and layers.

Precision: by default (``dtype=np.float64``) the float32 weights are widened
and every computation runs in float64, so this is the "exact" value of the
float32 network; outputs are float64 arrays. Against float32 TF graphs the
difference is float32 rounding only (6.9e-7 max against the TF1 fixtures).
``dtype=np.float32`` is available to study rounding, not used by the tests.

Two behaviours of the original TF1 code that are easy to get wrong:

- ``proj_clip`` is only applied when the cell projects (projection_dim < dim),
  exactly as TF1 ``LSTMCell`` does it (clipping lives inside ``if num_proj``).
- After ``<S>``/``</S>`` removal the original left, in layer 0 of
  ``lm_embeddings``, the token embedding of the padding positions (the char
  CNN maps an all-zero id row to a non-zero vector) rather than zeros; LSTM
  layers were zero there. ``layer0_padding="zeros"`` (the default, SPEC
  section 3: "zero-padded") zeroes them; ``layer0_padding="original"``
  reproduces the TF1 values.
"""
import json
import os
from typing import Dict, List, Union

import h5py
import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def lstm_step(x, c_prev, h_prev, kernel, bias, proj_kernel, cell_clip, proj_clip):
    """One TF1 ``LSTMCell`` step. x [B, in], c_prev [B, dim], h_prev [B, proj]
    -> (h [B, proj], c [B, dim])."""
    z = np.concatenate([x, h_prev], axis=1) @ kernel + bias
    i, j, f, o = np.split(z, 4, axis=1)
    c = sigmoid(f + 1.0) * c_prev + sigmoid(i) * np.tanh(j)
    if cell_clip is not None:
        c = np.clip(c, -cell_clip, cell_clip)
    h = sigmoid(o) * np.tanh(c)
    if proj_kernel is not None:
        h = h @ proj_kernel
        # TF1 LSTMCell clips the projected output only; no projection, no clip.
        if proj_clip is not None:
            h = np.clip(h, -proj_clip, proj_clip)
    return h, c


def reverse_within_lengths(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Reverse x [B, T, ...] along time inside each row's length (tf.reverse_sequence)."""
    out = x.copy()
    for b, n in enumerate(lengths):
        out[b, :n] = x[b, :n][::-1]
    return out


# Character ids (SPEC section 2), written here so the reference path needs no bilm code.
BOW, EOW, PAD = 258, 259, 260
BOS_CHAR, EOS_CHAR = 256, 257


def token_char_ids(token: str, max_chars: int) -> np.ndarray:
    """Char ids of one token for prediction (already shifted by +1)."""
    ids = np.full(max_chars, PAD, dtype=np.int64)
    if token == "<S>":
        body = [BOS_CHAR]
    elif token == "</S>":
        body = [EOS_CHAR]
    else:
        body = list(token.encode("utf-8", "ignore")[:max_chars - 2])
    ids[0] = BOW
    ids[1:1 + len(body)] = body
    ids[1 + len(body)] = EOW
    return ids + 1


def batch_char_ids(sentences: List[List[str]], max_chars: int) -> np.ndarray:
    """[n, max_len + 2, max_chars]: <S>, tokens, </S> per row, zero padded."""
    n_steps = max(len(sentence) for sentence in sentences) + 2
    batch = np.zeros((len(sentences), n_steps, max_chars), dtype=np.int64)
    for row, sentence in enumerate(sentences):
        for t, token in enumerate(["<S>"] + sentence + ["</S>"]):
            batch[row, t] = token_char_ids(token, max_chars)
    return batch


class NumpyBiLM:
    """Stateful biLM forward pass, same inputs/outputs as ``BidirectionalLanguageModel``.

    options: the options dict (or a path to options.json); weight_file: the
    inference hdf5; embedding_weight_file: hdf5 with dataset ``embedding`` for
    token input.
    """

    def __init__(self, options: Union[dict, str, os.PathLike], weight_file,
                 use_character_inputs: bool = True,
                 embedding_weight_file=None, max_batch_size: int = 128,
                 layer0_padding: str = "zeros", dtype=np.float64):
        if not isinstance(options, dict):
            with open(options, encoding="utf-8") as fin:
                options = json.load(fin)
        if layer0_padding not in ("zeros", "original"):
            raise ValueError("layer0_padding must be 'zeros' or 'original', "
                             f"got {layer0_padding!r}")
        self.options = options
        self.use_character_inputs = use_character_inputs
        self.max_batch_size = max_batch_size
        self.layer0_padding = layer0_padding
        self.dtype = dtype

        lstm = options["lstm"]
        self.dim = lstm["dim"]
        self.projection_dim = lstm["projection_dim"]
        self.n_layers = lstm.get("n_layers", 1)
        self.cell_clip = lstm.get("cell_clip")
        self.proj_clip = lstm.get("proj_clip")
        self.use_skip_connections = lstm["use_skip_connections"]
        self.projecting = self.projection_dim < self.dim

        with h5py.File(weight_file, "r") as fin:
            def read(name):
                return np.asarray(fin[name][...], dtype=dtype)

            if use_character_inputs:
                self._load_char_cnn(read)
            self.lstm_weights = []  # [direction][layer] = (kernel, bias, proj_kernel|None)
            for direction in range(2):
                layers = []
                for layer in range(self.n_layers):
                    root = f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell/"
                    proj_kernel = read(root + "W_P_0") if self.projecting else None
                    layers.append((read(root + "W_0"), read(root + "B"), proj_kernel))
                self.lstm_weights.append(layers)

        if not use_character_inputs:
            if embedding_weight_file is None:
                raise ValueError("embedding_weight_file is required for token input")
            with h5py.File(embedding_weight_file, "r") as fin:
                embedding = np.asarray(fin["embedding"][...], dtype=dtype)
            # row 0 is the padding id ("no token") and embeds to zeros
            self.word_embedding = np.concatenate(
                [np.zeros((1, embedding.shape[1]), dtype), embedding], axis=0)

        state_width = self.projection_dim if self.projecting else self.dim
        # states[direction][layer] = [c [max_batch, dim], h [max_batch, proj]]
        self.states = [
            [[np.zeros((max_batch_size, self.dim), dtype),
              np.zeros((max_batch_size, state_width), dtype)]
             for _ in range(self.n_layers)]
            for _ in range(2)
        ]

    def _load_char_cnn(self, read) -> None:
        cnn = self.options["char_cnn"]
        self.filters = cnn["filters"]
        self.activation = {"relu": relu, "tanh": np.tanh}[cnn["activation"]]
        char_embed = read("char_embed")
        # id 0 means "no char / no token" and embeds to zeros
        self.char_embed = np.concatenate(
            [np.zeros((1, char_embed.shape[1]), self.dtype), char_embed], axis=0)
        self.cnn_weights = [(read(f"CNN/W_cnn_{i}"), read(f"CNN/b_cnn_{i}"))
                            for i in range(len(self.filters))]
        n_highway = cnn.get("n_highway") or 0
        self.highway_weights = [
            tuple(read(f"CNN_high_{i}/{name}")
                  for name in ("W_carry", "b_carry", "W_transform", "b_transform"))
            for i in range(n_highway)
        ]
        n_filters = sum(count for _, count in self.filters)
        if n_filters != self.projection_dim:
            self.cnn_projection = (read("CNN_proj/W_proj"), read("CNN_proj/b_proj"))
        else:
            self.cnn_projection = None

    def char_cnn(self, char_ids: np.ndarray) -> np.ndarray:
        """char_ids [B, T, C] -> token embeddings [B, T, projection_dim]."""
        chars = self.char_embed[char_ids]  # [B, T, C, char_dim]
        n_chars = chars.shape[2]
        features = []
        for (width, count), (kernel, bias) in zip(self.filters, self.cnn_weights):
            kernel = kernel[0]  # [width, char_dim, count]
            n_positions = n_chars - width + 1
            conv = np.stack([
                np.einsum("btwd,wdk->btk", chars[:, :, p:p + width, :], kernel) + bias
                for p in range(n_positions)
            ], axis=2)  # [B, T, positions, count]
            # max over positions first, activation afterwards (as the original)
            features.append(self.activation(conv.max(axis=2)))
        x = np.concatenate(features, axis=-1)
        for w_carry, b_carry, w_transform, b_transform in self.highway_weights:
            carry_gate = sigmoid(x @ w_carry + b_carry)
            transform = relu(x @ w_transform + b_transform)
            x = carry_gate * transform + (1.0 - carry_gate) * x
        if self.cnn_projection is not None:
            w_proj, b_proj = self.cnn_projection
            x = x @ w_proj + b_proj
        return x

    def _run_layer(self, direction: int, layer: int, inputs: np.ndarray,
                   lengths: np.ndarray) -> np.ndarray:
        """Run one LSTM layer over inputs [B, T, in] (already in this direction's
        time order); updates the stored state; returns outputs [B, T, out]."""
        kernel, bias, proj_kernel = self.lstm_weights[direction][layer]
        batch_size, n_steps, _ = inputs.shape
        c_store, h_store = self.states[direction][layer]
        c = c_store[:batch_size].copy()
        h = h_store[:batch_size].copy()
        outputs = np.zeros((batch_size, n_steps, h.shape[1]), self.dtype)
        for t in range(n_steps):
            h_new, c_new = lstm_step(inputs[:, t], c, h, kernel, bias, proj_kernel,
                                     self.cell_clip, self.proj_clip)
            active = (t < lengths)[:, None]
            # finished rows keep their state and output zeros
            c = np.where(active, c_new, c)
            h = np.where(active, h_new, h)
            out = h_new + inputs[:, t] if (self.use_skip_connections and layer > 0) else h_new
            outputs[:, t] = np.where(active, out, 0.0)
        c_store[:batch_size] = c
        h_store[:batch_size] = h
        return outputs

    def run(self, ids: np.ndarray) -> Dict[str, np.ndarray]:
        """ids: int [B, T, max_chars] (char input) or [B, T] (token input), as
        the batchers produce them. Returns lm_embeddings [B, L+1, T-2, 2*proj],
        lengths [B], mask bool [B, T-2], token_embeddings [B, T, proj]."""
        ids = np.asarray(ids)
        if ids.shape[0] > self.max_batch_size:
            raise ValueError(f"batch size {ids.shape[0]} > max_batch_size {self.max_batch_size}")
        if self.use_character_inputs:
            mask = (ids > 0).any(axis=2)
            token_embeddings = self.char_cnn(ids)
        else:
            mask = ids > 0
            token_embeddings = self.word_embedding[ids]
        lengths = mask.sum(axis=1)
        batch_size, n_steps = mask.shape

        layer_outputs: List[List[np.ndarray]] = [[], []]  # [direction][layer] in forward time
        for direction in range(2):
            layer_input = token_embeddings
            if direction == 1:
                layer_input = reverse_within_lengths(layer_input, lengths)
            for layer in range(self.n_layers):
                output = self._run_layer(direction, layer, layer_input, lengths)
                layer_outputs[direction].append(
                    output if direction == 0 else reverse_within_lengths(output, lengths))
                layer_input = output

        layers = [np.concatenate([token_embeddings, token_embeddings], axis=-1)]
        for layer in range(self.n_layers):
            layers.append(np.concatenate(
                [layer_outputs[0][layer], layer_outputs[1][layer]], axis=-1))

        lm_embeddings = np.zeros((batch_size, len(layers), n_steps - 2, layers[0].shape[-1]),
                                 self.dtype)
        for b, n in enumerate(lengths):
            n_words = max(n - 2, 0)
            for k, layer in enumerate(layers):
                lm_embeddings[b, k, :n_words] = layer[b, 1:1 + n_words]
                if k == 0 and self.layer0_padding == "original":
                    lm_embeddings[b, k, n_words:] = layer[b, n_words + 2:]
        sentence_mask = np.arange(n_steps - 2)[None, :] < (lengths - 2)[:, None]
        return {
            "lm_embeddings": lm_embeddings,
            "lengths": lengths - 2,
            "mask": sentence_mask,
            "token_embeddings": token_embeddings,
        }

    def reset_states(self) -> None:
        """Zero every stored (c, h) state, as a freshly initialised graph has them."""
        for direction_states in self.states:
            for c, h in direction_states:
                c[...] = 0.0
                h[...] = 0.0
