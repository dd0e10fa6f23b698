"""ELMo: a task-specific, trainable scalar mix of the biLM layers."""
import re
from typing import Dict, Optional, Union

import tensorflow.compat.v1 as tf

LAYER_NORM_EPSILON = 1e-12


def weight_layers(name: str, bilm_ops: Dict[str, tf.Tensor],
                  l2_coef: Optional[float] = None, use_top_only: bool = False,
                  do_layer_norm: bool = False) -> Dict[str, Union[tf.Tensor, float]]:
    """Weight the layers of a biLM with trainable scalar weights.

    Variables (in the current variable scope): `{name}_ELMo_W` [L] (zeros)
    and `{name}_ELMo_gamma` [1] (ones); calling again with the same name under
    a reuse=True scope shares them.

    Args:
      name: prefix of the variables.
      bilm_ops: the dict returned by `BidirectionalLanguageModel(ids)`;
        'lm_embeddings' [B, L, T, D] and 'mask' bool [B, T] are used.
      l2_coef: weight of the l2 penalty on W, added to the
        REGULARIZATION_LOSSES collection; None means no penalty.
      use_top_only: return gamma * the top layer only (no W, no penalty).
      do_layer_norm: normalize each layer by the mean and variance over its
        unmasked positions before mixing.
    Returns:
      {'weighted_op': float32 [B, T, D], 'regularization_op': the penalty
      tensor, or 0.0 when there is none}.
    """
    lm_embeddings = bilm_ops["lm_embeddings"]
    mask = bilm_ops["mask"]
    if lm_embeddings.shape.rank != 4 or lm_embeddings.shape[1] is None \
            or lm_embeddings.shape[3] is None:
        raise ValueError("bilm_ops['lm_embeddings'] must be [batch, n_layers, time, "
                         f"dim] with static n_layers and dim, got {lm_embeddings.shape}")
    n_lm_layers = int(lm_embeddings.shape[1])

    def l2_penalty(weights):
        return l2_coef * tf.reduce_sum(tf.square(weights))

    # Variables and their penalty do not depend on the inputs, so the
    # penalty can be evaluated without feeding the biLM.
    weights = None
    regularization = 0.0
    if not use_top_only:
        weights = tf.get_variable(
            f"{name}_ELMo_W", shape=(n_lm_layers,), initializer=tf.zeros_initializer(),
            regularizer=l2_penalty if l2_coef is not None else None, trainable=True)
        if l2_coef is not None:
            penalties = [loss for loss in tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES)
                         if re.search(rf"(^|/){re.escape(name)}_ELMo_W/", loss.name)]
            if len(penalties) != 1:
                raise ValueError(f"expected one regularization loss for "
                                 f"{name}_ELMo_W, found {len(penalties)}")
            regularization = penalties[0]
    gamma = tf.get_variable(f"{name}_ELMo_gamma", shape=(1,),
                            initializer=tf.ones_initializer(), trainable=True)

    with tf.control_dependencies([lm_embeddings, mask]):
        mixed = scalar_mix(lm_embeddings, mask, weights, gamma, do_layer_norm, use_top_only)
    return {"weighted_op": mixed, "regularization_op": regularization}


def scalar_mix(lm_embeddings: tf.Tensor, mask: tf.Tensor, layer_weights: Optional[tf.Tensor],
               gamma: tf.Tensor, do_layer_norm: bool = False,
               use_top_only: bool = False) -> tf.Tensor:
    """`weight_layers` on tensors: gamma * sum_k softmax(W + 1/L)_k * layer_k.

    Args:
      lm_embeddings: float32 [B, L, T, D]; mask: bool [B, T].
      layer_weights: [L] (unused with use_top_only); gamma: [1].
      do_layer_norm: normalize each layer by the mean and variance over the
        unmasked positions of the batch (eps 1e-12) before mixing.
    Returns:
      float32 [B, T, D].
    """
    n_layers = int(lm_embeddings.shape[1])
    if use_top_only:
        return lm_embeddings[:, -1] * gamma
    mask_float = tf.cast(mask, tf.float32)
    broadcast_mask = mask_float[:, :, None]
    n_values = tf.reduce_sum(mask_float) * tf.cast(tf.shape(lm_embeddings)[3], tf.float32)

    def layer_norm(x):
        x_masked = x * broadcast_mask
        mean = tf.reduce_sum(x_masked) / n_values
        variance = tf.reduce_sum(((x_masked - mean) * broadcast_mask) ** 2) / n_values
        return tf.nn.batch_normalization(x, mean, variance, None, None, LAYER_NORM_EPSILON)

    normed_weights = tf.unstack(tf.nn.softmax(layer_weights + 1.0 / n_layers), num=n_layers)
    layers = tf.unstack(lm_embeddings, num=n_layers, axis=1)
    mixed = tf.add_n([w * (layer_norm(layer) if do_layer_norm else layer)
                      for w, layer in zip(normed_weights, layers)])
    return mixed * gamma
