"""The network pieces, written once for the inference and the training graph.

Each piece has a `create_*_weights` function that makes its variables with
`tf.get_variable` under the caller's variable scope (so the caller decides the
TF1-compatible names) and a function that applies those weights to a tensor.
Creating and applying are separate because training applies one set of
weights to both directions.

Shapes: B batch, T time steps, C characters per token, D dims.
"""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import tensorflow.compat.v1 as tf

DTYPE = tf.float32
# The TF1 LSTMCell adds this to the forget gate; it is not part of the weights.
FORGET_BIAS = 1.0
ROWS_MULTIPLE = 32


# ---------------------------------------------------------------------------
# Character CNN, highway layers and projection
# ---------------------------------------------------------------------------

def create_char_cnn_weights(cnn_options: dict, projection_dim: int) -> dict:
    """Variables of the character encoder, with the original initializers.

    Names under the current scope: char_embed, CNN/W_cnn_{i}, CNN/b_cnn_{i},
    CNN_high_{i}/{W,b}_{carry,transform}, CNN_proj/{W,b}_proj.
    """
    n_chars = cnn_options["n_characters"]
    char_dim = cnn_options["embedding"]["dim"]
    filters = cnn_options["filters"]
    n_filters = sum(count for _, count in filters)
    weights = {"char_embed": tf.get_variable(
        "char_embed", [n_chars, char_dim], dtype=DTYPE,
        initializer=tf.random_uniform_initializer(-1.0, 1.0))}

    weights["cnn"] = []
    with tf.variable_scope("CNN"):
        for i, (width, count) in enumerate(filters):
            if cnn_options["activation"] == "relu":
                w_init = tf.random_uniform_initializer(minval=-0.05, maxval=0.05)
            else:
                w_init = tf.random_normal_initializer(
                    stddev=np.sqrt(1.0 / (width * char_dim)))
            kernel = tf.get_variable(f"W_cnn_{i}", [1, width, char_dim, count],
                                     dtype=DTYPE, initializer=w_init)
            bias = tf.get_variable(f"b_cnn_{i}", [count], dtype=DTYPE,
                                   initializer=tf.constant_initializer(0.0))
            weights["cnn"].append((kernel, bias))

    weights["highway"] = []
    dense_init = tf.random_normal_initializer(stddev=np.sqrt(1.0 / n_filters))
    for i in range(cnn_options.get("n_highway") or 0):
        with tf.variable_scope(f"CNN_high_{i}"):
            layer = {}
            for gate, bias_value in (("carry", -2.0), ("transform", 0.0)):
                layer[f"W_{gate}"] = tf.get_variable(
                    f"W_{gate}", [n_filters, n_filters], dtype=DTYPE,
                    initializer=dense_init)
                layer[f"b_{gate}"] = tf.get_variable(
                    f"b_{gate}", [n_filters], dtype=DTYPE,
                    initializer=tf.constant_initializer(bias_value))
            weights["highway"].append(layer)

    weights["projection"] = None
    if n_filters != projection_dim:
        with tf.variable_scope("CNN_proj"):
            weights["projection"] = (
                tf.get_variable("W_proj", [n_filters, projection_dim], dtype=DTYPE,
                                initializer=dense_init),
                tf.get_variable("b_proj", [projection_dim], dtype=DTYPE,
                                initializer=tf.constant_initializer(0.0)))
    return weights


def char_cnn(char_ids: tf.Tensor, weights: dict, cnn_options: dict) -> tf.Tensor:
    """Token vectors from character ids.

    Args:
      char_ids: int [B, T, C].
    Returns:
      float32 [B, T, projection_dim] (or [B, T, sum of filter counts] when
      there is no projection).
    """
    with tf.name_scope("char_cnn"):
        embedding = _char_convolutions(char_ids, weights, cnn_options)
    return highway_and_projection(embedding, weights)


def _char_convolutions(char_ids: tf.Tensor, weights: dict, cnn_options: dict) -> tf.Tensor:
    """int [B, T, C] -> float32 [B, T, sum of filter counts].

    Each token's convolutions run over only as many leading character
    positions as its max-pool needs (`_needed_positions`): tokens are put in
    a few groups by that count, each group runs on a static prefix of its
    rows, and the results are stitched back in order. Same numbers as the
    convolutions over all C positions (the windows left out are copies of
    ones kept), at a half to a third of the work for ordinary words.
    """
    activation = tf.nn.relu if cnn_options["activation"] == "relu" else tf.nn.tanh
    max_chars = cnn_options["max_characters_per_token"]
    widths = [width for width, _ in cnn_options["filters"]]
    kernels = [kernel for kernel, _ in weights["cnn"]]
    rows = tf.reshape(char_ids, [-1, max_chars])
    bounds = position_bounds(max_chars, max(widths))
    group = tf.zeros_like(rows[:, 0], dtype=tf.int32)
    if len(bounds) > 1:
        needed = _needed_positions(rows, max(widths))
        group = tf.add_n([tf.cast(needed > bound, tf.int32) for bound in bounds[:-1]])
    grouped_rows = tf.dynamic_partition(rows, group, len(bounds))
    grouped_indices = tf.dynamic_partition(tf.range(tf.shape(rows)[0]), group, len(bounds))
    pooled = []
    for group_rows, n_positions in zip(grouped_rows, bounds):
        n_rows = tf.shape(group_rows)[0]
        # rows padded to a multiple of ROWS_MULTIPLE (a few shapes for
        # oneDNN's kernel cache; not below it, so one sentence stays small),
        # and an empty group to one row: oneDNN's max-pool returns a wrongly
        # shaped result for an empty batch
        multiple = tf.where(n_rows < ROWS_MULTIPLE, 1, ROWS_MULTIPLE)
        n_padding = tf.maximum(1 - n_rows, -n_rows % multiple)
        group_rows = tf.pad(group_rows[:, :n_positions], [[0, n_padding], [0, 0]])
        pooled.append(_max_pooled_convolutions(
            tf.nn.embedding_lookup(weights["char_embed"], group_rows),
            widths, kernels)[:n_rows])
    # The original adds the bias, max-pools, then applies the activation.
    # Adding the bias after the pool gives the same numbers (rounding is
    # monotonic, so max(x + b) == max(x) + b exactly) and its gradient
    # sums [N, filters] instead of [N, positions, filters].
    bias = tf.concat([bias for _, bias in weights["cnn"]], axis=0)
    pooled = activation(tf.dynamic_stitch(grouped_indices, pooled) + bias)
    return tf.reshape(pooled, tf.concat([tf.shape(char_ids)[:-1], [int(bias.shape[0])]],
                                        axis=0))


def position_bounds(max_chars: int, max_width: int) -> List[int]:
    """Static prefix lengths of the token groups: words of up to 7, up to 15
    and more characters (a word's ids are BOW, its characters, EOW, padding)."""
    return [bound for bound in (max_width + 9, max_width + 17)
            if bound < max_chars] + [max_chars]


def _needed_positions(char_ids: tf.Tensor, max_width: int) -> tf.Tensor:
    """int [N, C] -> int [N]: how many leading positions of each token the
    max-pooled convolutions need.

    A token ends in a run of one repeated id (its padding character; 0 for a
    padding token). Every window inside that run holds the same ids, so gives
    the same value: the windows starting before the run, plus the first one
    inside it, already hold every value the pool sees. If the run starts at
    position L, they fit in the first L + max_width positions.
    """
    char_ids = tf.cast(char_ids, tf.int32)
    positions = tf.range(1, tf.shape(char_ids)[1] + 1)
    differs_from_last = tf.not_equal(char_ids, char_ids[:, -1:])
    run_start = tf.reduce_max(tf.where(differs_from_last,
                                       tf.broadcast_to(positions, tf.shape(char_ids)),
                                       tf.zeros_like(char_ids)), axis=1)
    return run_start + max_width


def _max_pooled_convolutions(char_embedding: tf.Tensor, widths: Sequence[int],
                             kernels: Sequence[tf.Variable]) -> tf.Tensor:
    """float32 [N, P, D] (P static) -> [N, sum of filter counts]: each
    filter's maximum over its P - width + 1 windows (no bias, no activation)."""
    n_positions = int(char_embedding.shape[1])
    x = char_embedding[None]
    pooled = []
    for width, kernel in zip(widths, kernels):
        conv = tf.nn.conv2d(x, kernel, strides=[1, 1, 1, 1], padding="VALID")
        conv = tf.nn.max_pool2d(conv, [1, 1, n_positions - width + 1, 1],
                                [1, 1, 1, 1], "VALID")
        pooled.append(conv)
    pooled = tf.concat(pooled, axis=3)    # [1, N, 1, sum of filter counts]
    return tf.reshape(pooled, [-1, int(pooled.shape[3])])


def distinct_token_embeddings(char_ids: Sequence[tf.Tensor], weights: dict,
                              cnn_options: dict) -> List[tf.Tensor]:
    """`char_cnn` of several id tensors, run once per distinct token.

    A token's vector depends only on its characters, and a batch of text
    repeats most of its words (half of 640 tokens are repeats), so the CNN,
    highway and projection run on the distinct rows of all inputs together
    and the result is gathered back; the gradient flows through the gather
    (summing a token's occurrences), so the step computes the same values.

    Args:
      char_ids: int [B_k, T_k, C] each (e.g. the forward and reverse stream).
    Returns:
      one float32 [B_k, T_k, out_dim] per input.
    """
    max_chars = cnn_options["max_characters_per_token"]
    with tf.name_scope("distinct_tokens"):
        flat = [tf.reshape(ids, [-1, max_chars]) for ids in char_ids]
        distinct, positions = tf.raw_ops.UniqueV2(x=tf.concat(flat, axis=0), axis=[0],
                                                  out_idx=tf.int32)
        # rows padded to a multiple of ROWS_MULTIPLE: a few shapes
        # instead of one per count, so oneDNN's cache of kernels per shape
        # stays small (the padding rows are never gathered)
        n_padding = -tf.shape(distinct)[0] % ROWS_MULTIPLE
        distinct = tf.pad(distinct, [[0, n_padding], [0, 0]])
    embedded = char_cnn(distinct[None], weights, cnn_options)[0]   # [U, out_dim]
    out_dim = int(embedded.shape[-1])
    gathered = tf.split(tf.gather(embedded, positions),
                        [tf.shape(ids)[0] for ids in flat], axis=0)
    return [tf.reshape(vectors, tf.concat([tf.shape(ids)[:2], [out_dim]], axis=0))
            for vectors, ids in zip(gathered, char_ids)]


def highway_and_projection(embedding: tf.Tensor, weights: dict) -> tf.Tensor:
    """Highway layers then the projection, on [B, T, n_filters] -> [B, T, out]."""
    if not weights["highway"] and weights["projection"] is None:
        return embedding
    batch_and_time = tf.shape(embedding)[:2]
    x = tf.reshape(embedding, [-1, int(embedding.shape[-1])])
    for layer in weights["highway"]:
        with tf.name_scope("highway"):
            carry_gate = tf.nn.sigmoid(tf.matmul(x, layer["W_carry"]) + layer["b_carry"])
            transform = tf.nn.relu(tf.matmul(x, layer["W_transform"]) + layer["b_transform"])
            x = carry_gate * transform + (1.0 - carry_gate) * x
    if weights["projection"] is not None:
        w_proj, b_proj = weights["projection"]
        with tf.name_scope("token_projection"):
            x = tf.matmul(x, w_proj) + b_proj
    out_dim = int(x.shape[-1])
    return tf.reshape(x, tf.concat([batch_and_time, [out_dim]], axis=0))


# ---------------------------------------------------------------------------
# LSTM with projection and clipping (the TF1 LSTMCell, gate order i, j, f, o)
# ---------------------------------------------------------------------------

class LSTMWeights(NamedTuple):
    kernel: tf.Variable              # [input_dim + output_dim, 4 * dim]
    bias: tf.Variable                # [4 * dim]
    projection: Optional[tf.Variable]  # [dim, projection_dim] or None


def create_lstm_weights(input_dim: int, lstm_dim: int, projection_dim: int) -> LSTMWeights:
    """Variables `lstm_cell/kernel`, `lstm_cell/bias` and, when projecting,
    `lstm_cell/projection/kernel` under the current scope (TF1 LSTMCell names)."""
    output_dim = projection_dim if projection_dim < lstm_dim else lstm_dim
    with tf.variable_scope("lstm_cell"):
        kernel = tf.get_variable("kernel", [input_dim + output_dim, 4 * lstm_dim],
                                 dtype=DTYPE)
        bias = tf.get_variable("bias", [4 * lstm_dim], dtype=DTYPE,
                               initializer=tf.zeros_initializer())
        projection = None
        if projection_dim < lstm_dim:
            with tf.variable_scope("projection"):
                projection = tf.get_variable("kernel", [lstm_dim, projection_dim],
                                             dtype=DTYPE)
    return LSTMWeights(kernel, bias, projection)


def lstm_cell_update(input_gates: tf.Tensor, c_prev: tf.Tensor, h_prev: tf.Tensor,
                     recurrent_kernel: tf.Tensor, projection: Optional[tf.Tensor],
                     cell_clip: Optional[float], proj_clip: Optional[float]
                     ) -> Tuple[tf.Tensor, tf.Tensor]:
    """One LSTM step given the input's share of the gates.

    Args:
      input_gates: [B, 4*dim], x·W_x + b for this step.
      c_prev: [B, dim]; h_prev: [B, out_dim].
    Returns:
      (c, h): [B, dim], [B, out_dim].
    """
    gates = input_gates + tf.matmul(h_prev, recurrent_kernel)
    step = _cell_from_gates(gates, c_prev, projection, cell_clip, proj_clip)
    return step.c, step.h


class _CellStep(NamedTuple):
    """One step's values; the fixed-steps runner keeps them for its gradient.
    All [B, dim] except h_unclipped and h [B, out_dim]."""
    sig_i: tf.Tensor
    tanh_j: tf.Tensor
    sig_f: tf.Tensor
    sig_o: tf.Tensor
    c_unclipped: tf.Tensor
    c: tf.Tensor
    tanh_c: tf.Tensor
    m: tf.Tensor            # the cell output before the projection
    h_unclipped: tf.Tensor
    h: tf.Tensor


def _cell_from_gates(gates: tf.Tensor, c_prev: tf.Tensor, projection: Optional[tf.Tensor],
                     cell_clip: Optional[float], proj_clip: Optional[float]) -> _CellStep:
    """The TF1 LSTMCell's arithmetic after the gate product (order i, j, f, o)."""
    i, j, f, o = tf.split(gates, 4, axis=1)
    sig_i, tanh_j = tf.sigmoid(i), tf.tanh(j)
    sig_f, sig_o = tf.sigmoid(f + FORGET_BIAS), tf.sigmoid(o)
    c_unclipped = sig_f * c_prev + sig_i * tanh_j
    c = c_unclipped
    if cell_clip is not None:
        c = tf.clip_by_value(c_unclipped, -cell_clip, cell_clip)
    tanh_c = tf.tanh(c)
    m = sig_o * tanh_c
    h_unclipped = h = m
    if projection is not None:
        h_unclipped = h = tf.matmul(m, projection)
        # TF1 LSTMCell clips the projection only: no projection, no clip
        if proj_clip is not None:
            h = tf.clip_by_value(h_unclipped, -proj_clip, proj_clip)
    return _CellStep(sig_i, tanh_j, sig_f, sig_o, c_unclipped, c, tanh_c, m, h_unclipped, h)


def run_lstm(inputs: tf.Tensor, weights: LSTMWeights, initial_state: Sequence[tf.Tensor],
             sequence_lengths: Optional[tf.Tensor] = None,
             cell_clip: Optional[float] = None, proj_clip: Optional[float] = None,
             residual: bool = False, tf1_gate_order: bool = False
             ) -> Tuple[tf.Tensor, Tuple[tf.Tensor, tf.Tensor]]:
    """Run one LSTM layer over time.

    By default the input-to-gates product of every step is one matrix
    product outside the recurrence; only h·W_h is left inside the loop.
    `tf1_gate_order` computes each step's gates as TF1's LSTMCell does,
    bias_add([x, h]·W, b): the same numbers bit for bit as the original
    library (the hoisted sum rounds differently, ~1e-6 after a few stateful
    batches), at ~1.6x the time for one sentence per run.

    Args:
      inputs: float32 [B, T, input_dim].
      initial_state: (c [B, dim], h [B, out_dim]).
      sequence_lengths: int32 [B] or None (all steps valid). Past its length a
        row outputs zeros and its state stops changing (TF1 dynamic_rnn).
      residual: add the layer input to the output (TF1 ResidualWrapper);
        the carried state excludes it.
    Returns:
      outputs float32 [B, T, out_dim], final state (c, h) — the state at each
      row's last valid step.
    """
    input_dim = int(inputs.shape[-1])
    input_kernel = weights.kernel[:input_dim]
    recurrent_kernel = weights.kernel[input_dim:]
    n_steps = tf.shape(inputs)[1]
    # Time-major [T, B, 4*dim] so the loop reads one contiguous step at a
    # time; transposing the inputs is 8x cheaper than transposing the gates.
    time_major_inputs = tf.transpose(inputs, [1, 0, 2])
    if not tf1_gate_order:
        input_gates = _all_steps_input_gates(time_major_inputs, input_kernel, weights.bias)
    if sequence_lengths is not None:
        valid = tf.transpose(tf.sequence_mask(sequence_lengths, n_steps))  # [T, B]
        valid = tf.expand_dims(valid, -1)

    outputs = tf.TensorArray(DTYPE, size=n_steps)
    c0, h0 = initial_state

    def step(t, c_prev, h_prev, outputs):
        if tf1_gate_order:
            gates = tf.nn.bias_add(
                tf.matmul(tf.concat([time_major_inputs[t], h_prev], 1), weights.kernel),
                weights.bias)
            cell = _cell_from_gates(gates, c_prev, weights.projection, cell_clip, proj_clip)
            c, h = cell.c, cell.h
        else:
            c, h = lstm_cell_update(input_gates[t], c_prev, h_prev, recurrent_kernel,
                                    weights.projection, cell_clip, proj_clip)
        if sequence_lengths is not None:
            is_valid = valid[t]
            out = tf.where_v2(is_valid, h, 0.0)
            c = tf.where_v2(is_valid, c, c_prev)
            h = tf.where_v2(is_valid, h, h_prev)
        else:
            out = h
        return t + 1, c, h, outputs.write(t, out)

    _, c_final, h_final, outputs = tf.while_loop(
        lambda t, *_: t < n_steps, step, [tf.constant(0), c0, h0, outputs],
        parallel_iterations=1)
    layer_output = tf.transpose(outputs.stack(), [1, 0, 2])
    out_dim = int(recurrent_kernel.shape[0])
    layer_output.set_shape([None, None, out_dim])
    c_final.set_shape(c0.shape)
    h_final.set_shape(h0.shape)
    if residual:
        if sequence_lengths is not None:
            inputs = inputs * tf.cast(tf.sequence_mask(sequence_lengths, n_steps),
                                      DTYPE)[:, :, None]
        layer_output = layer_output + inputs
    return layer_output, (c_final, h_final)


def _all_steps_input_gates(time_major_inputs: tf.Tensor, input_kernel: tf.Tensor,
                           bias: tf.Tensor) -> tf.Tensor:
    """x·W_x + b of every step in one product: [T, B, D] -> [T, B, 4*dim]."""
    shape = tf.shape(time_major_inputs)
    input_dim = int(time_major_inputs.shape[-1])
    gates = tf.matmul(tf.reshape(time_major_inputs, [-1, input_dim]), input_kernel) + bias
    gates = tf.reshape(gates, tf.concat([shape[:2], [-1]], axis=0))
    gates.set_shape(time_major_inputs.shape[:2].concatenate(input_kernel.shape[1:]))
    return gates


def run_lstm_fixed_steps(inputs: tf.Tensor, weights: LSTMWeights,
                         initial_state: Sequence[tf.Tensor],
                         cell_clip: Optional[float] = None, proj_clip: Optional[float] = None,
                         residual: bool = False
                         ) -> Tuple[tf.Tensor, Tuple[tf.Tensor, tf.Tensor]]:
    """`run_lstm` for training: a static number of steps, every step valid.

    The same cell arithmetic, unrolled in the graph (as the original's
    static_rnn) with a hand-written gradient: the backward recurrence keeps
    only the per-step products it cannot avoid (dgates·W_hᵀ, dh·W_projᵀ), and
    the weight gradients of all steps are one matrix product each instead of
    one small product per step added up — the same sums, fewer and larger
    products.

    Args:
      inputs: float32 [B, T, input_dim], T static.
      initial_state: (c [B, dim], h [B, out_dim]).
    Returns:
      outputs float32 [B, T, out_dim], final state (c, h).
    """
    input_dim = int(inputs.shape[-1])
    n_steps = inputs.shape[1]
    if n_steps is None:
        raise ValueError(f"run_lstm_fixed_steps needs a static number of steps; "
                         f"inputs have shape {inputs.shape}")
    n_steps = int(n_steps)
    with tf.name_scope("lstm"):
        # split, not two slices: the gradient of a slice is a zero-filled
        # kernel-sized tensor per slice, added up afterwards
        input_kernel, recurrent_kernel = tf.split(
            weights.kernel, [input_dim, int(weights.kernel.shape[0]) - input_dim], axis=0)
        input_gates = _all_steps_input_gates(tf.transpose(inputs, [1, 0, 2]), input_kernel,
                                             weights.bias)
        recurrence = _fixed_steps_recurrence(n_steps, weights.projection is not None,
                                             cell_clip, proj_clip)
        projection = [] if weights.projection is None else [
            tf.convert_to_tensor(weights.projection)]
        outputs, c_final, h_final = recurrence(
            input_gates, initial_state[0], initial_state[1], recurrent_kernel, *projection)
        layer_output = tf.transpose(outputs, [1, 0, 2])
        if residual:
            layer_output = layer_output + inputs
    return layer_output, (c_final, h_final)


def _fixed_steps_recurrence(n_steps: int, has_projection: bool,
                            cell_clip: Optional[float], proj_clip: Optional[float]):
    """The recurrence of `run_lstm_fixed_steps` with its gradient.

    Returns f(input_gates [T, B, 4*dim], c0 [B, dim], h0 [B, out_dim],
    recurrent_kernel [out_dim, 4*dim], [projection [dim, out_dim]]) ->
    (outputs [T, B, out_dim], c_final, h_final).
    """
    proj_clip = proj_clip if has_projection else None

    @tf.custom_gradient
    def recurrence(input_gates, c0, h0, recurrent_kernel, *projection):
        projection = projection[0] if has_projection else None
        c, h = c0, h0
        steps = []
        for gates_x in tf.unstack(input_gates, n_steps):
            step = _cell_from_gates(gates_x + tf.matmul(h, recurrent_kernel), c,
                                    projection, cell_clip, proj_clip)
            steps.append(step)
            c, h = step.c, step.h
        outputs = tf.stack([step.h for step in steps])

        def gradient(d_outputs, d_c_final, d_h_final):
            return _fixed_steps_gradient(steps, c0, h0, recurrent_kernel, projection,
                                         d_outputs, d_c_final, d_h_final,
                                         cell_clip, proj_clip)
        return (outputs, c, h), gradient

    return recurrence


def _fixed_steps_gradient(steps: Sequence[_CellStep], c0, h0, recurrent_kernel, projection,
                          d_outputs, d_c_final, d_h_final, cell_clip, proj_clip) -> list:
    """Backward pass of `_fixed_steps_recurrence` (same formulas as TF's own
    gradients of sigmoid, tanh, clip_by_value and matmul)."""
    def zeros_if_none(grad, like):
        return tf.zeros_like(like) if grad is None else grad

    d_outputs = tf.unstack(zeros_if_none(d_outputs, tf.stack([s.h for s in steps])),
                           len(steps))
    dc_next = zeros_if_none(d_c_final, c0)
    dh_next = zeros_if_none(d_h_final, h0)
    d_gates, d_projected = [None] * len(steps), [None] * len(steps)
    recurrent_kernel_t = _transposed_copy(recurrent_kernel)
    projection_t = None if projection is None else _transposed_copy(projection)
    for t in reversed(range(len(steps))):
        step = steps[t]
        c_prev = c0 if t == 0 else steps[t - 1].c
        dh = d_outputs[t] + dh_next
        if proj_clip is not None:
            dh = tf.where_v2(tf.abs(step.h_unclipped) <= proj_clip, dh, 0.0)
        if projection is not None:
            d_projected[t] = dh
            dm = tf.matmul(dh, projection_t)
        else:
            dm = dh
        dc = dc_next + dm * step.sig_o * (1.0 - step.tanh_c * step.tanh_c)
        if cell_clip is not None:
            dc = tf.where_v2(tf.abs(step.c_unclipped) <= cell_clip, dc, 0.0)
        d_gates[t] = tf.concat([dc * step.tanh_j * step.sig_i * (1.0 - step.sig_i),
                                dc * step.sig_i * (1.0 - step.tanh_j * step.tanh_j),
                                dc * c_prev * step.sig_f * (1.0 - step.sig_f),
                                dm * step.tanh_c * step.sig_o * (1.0 - step.sig_o)], axis=1)
        dc_next = dc * step.sig_f
        dh_next = tf.matmul(d_gates[t], recurrent_kernel_t)

    d_input_gates = tf.stack(d_gates)                         # [T, B, 4*dim]
    four_dim = int(recurrent_kernel.shape[1])
    h_prev = tf.concat([h0] + [s.h for s in steps[:-1]], axis=0)   # [T*B, out_dim]
    d_recurrent_kernel = tf.matmul(h_prev, tf.reshape(d_input_gates, [-1, four_dim]),
                                   transpose_a=True)
    grads = [d_input_gates, dc_next, dh_next, d_recurrent_kernel]
    if projection is not None:
        m = tf.concat([s.m for s in steps], axis=0)                # [T*B, dim]
        grads.append(tf.matmul(m, tf.concat(d_projected, axis=0), transpose_a=True))
    return grads


def _transposed_copy(kernel: tf.Tensor) -> tf.Tensor:
    """kernelᵀ as a tensor of its own, for the backward recurrence's products.

    oneDNN multiplies a few rows by a transposed operand at ~2/3 the speed of
    a plain one ([128, 16384] x W_hᵀ at standard size: 12-15 vs 8-11 ms), so
    the kernels are transposed once per batch. Grappler folds a bare
    transpose back into the product's transpose flag; a Snapshot keeps it.
    """
    return tf.raw_ops.Snapshot(input=tf.transpose(kernel))


def reverse_sequences(x: tf.Tensor, sequence_lengths: tf.Tensor) -> tf.Tensor:
    """Reverse each row of [B, T, ...] within its length (padding stays put)."""
    return tf.reverse_sequence(x, sequence_lengths, seq_axis=1, batch_axis=0)


def remove_sentence_boundaries(x: tf.Tensor, sequence_lengths: tf.Tensor) -> tf.Tensor:
    """Drop <S> and </S> of each row of [B, T, ...] -> [B, T - 2, ...].

    Rows stay left-aligned: reverse within length-1 after dropping <S>, drop
    the first (now </S>), reverse back within length-2.
    """
    without_bos = reverse_sequences(x[:, 1:], sequence_lengths - 1)
    return reverse_sequences(without_bos[:, 1:], sequence_lengths - 2)


def bilm_outputs(token_embeddings: tf.Tensor, forward_outputs: Sequence[tf.Tensor],
                 backward_outputs: Sequence[tf.Tensor], token_mask: tf.Tensor,
                 sequence_lengths: tf.Tensor) -> dict:
    """The biLM's output ops from its layers (all with <S> and </S>).

    Args:
      token_embeddings: [B, T, proj]; forward_outputs, backward_outputs: one
        [B, T, out_dim] per LSTM layer, in input order; token_mask: bool
        [B, T]; sequence_lengths: int32 [B], tokens including <S> and </S>.
    Returns:
      {'lm_embeddings' [B, n_layers + 1, T - 2, 2 * proj] (layer 0 is the
      token embedding twice), 'lengths' [B], 'mask' bool [B, T - 2],
      'token_embeddings' [B, T, proj]}.
    """
    layers = [tf.concat([token_embeddings, token_embeddings], axis=2)]
    for forward, backward in zip(forward_outputs, backward_outputs):
        layers.append(tf.concat([forward, backward], axis=-1))
    lm_embeddings = tf.stack(
        [remove_sentence_boundaries(layer, sequence_lengths) for layer in layers], axis=1)
    mask = tf.cast(remove_sentence_boundaries(
        tf.cast(token_mask, tf.int32)[:, :, None], sequence_lengths)[:, :, 0], tf.bool)
    return {"lm_embeddings": lm_embeddings, "lengths": sequence_lengths - 2,
            "token_embeddings": token_embeddings, "mask": mask}
