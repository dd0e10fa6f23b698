"""One training step: towers, averaged and clipped gradients, Adagrad.

`TrainingGraph` builds one `LanguageModel` per tower (`/gpu:k`, variables
shared under the scope `lm`), averages the towers' gradients, clips them by
global norm and applies Adagrad, with the original's summaries. Given a
`bilm.cluster.Cluster` the update is synchronous across workers instead
(variables on ps tasks). Variable names: those of `lm_graph` plus
global_step, train_perplexity and the Adagrad slot <name>/Adagrad of every
trainable variable.
"""
import logging
from contextlib import ExitStack
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow.compat.v1 as tf

from .cluster import Cluster, SyncReplicas
from .lm_graph import LanguageModel, print_variable_summary

logger = logging.getLogger(__name__)

MAX_CHECKPOINTS_TO_KEEP = 2


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


class TrainingGraph(object):
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
