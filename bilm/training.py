"""Train and evaluate the biLM: the original's `bilm.training` names.

`train` runs the training loop on one machine (towers on one or more
devices) or on one worker of a cluster; `test` reports the perplexity of a
checkpoint; `load_vocab` / `load_data` read what the options call for. The
pieces live in modules of their own and keep their public names here:

  lm_graph.py     LanguageModel (the graph and its loss), option checks
  train_step.py   towers, averaged + clipped gradients, Adagrad
  checkpoints.py  TF1 names, restore, load_options_latest_checkpoint,
                  dump_weights
  cluster.py      the ps/worker runtime the cluster loop below runs on
"""
import datetime
import json
import logging
import os
import re
import time
from typing import Optional

import numpy as np
import tensorflow.compat.v1 as tf

from .checkpoints import (_write_json, checkpoint_name_map,
                          dump_weights, load_options_latest_checkpoint,
                          restore_checkpoint)
from .cluster import (STOP_TOKEN, Cluster, ClusterRun, start_server,
                      worker_shards)
from .data import (BidirectionalLMDataset, LMDataset, UnicodeCharsVocabulary,
                   Vocabulary)
from .lm_graph import (DTYPE_INT, LanguageModel, _missing_batch_key_message,
                       inference_options, print_variable_summary,
                       validate_training_options)
from .train_step import (MAX_CHECKPOINTS_TO_KEEP, TrainingGraph, average_gradients,
                         clip_grads, summary_gradient_updates)

__all__ = [  # the original's public names, wherever they live now
    "LanguageModel", "train", "test", "load_vocab", "load_data", "dump_weights",
    "load_options_latest_checkpoint", "restore_checkpoint", "checkpoint_name_map",
    "average_gradients", "clip_grads", "summary_gradient_updates",
    "print_variable_summary", "validate_training_options", "inference_options",
    "TrainingGraph", "DTYPE_INT", "MAX_CHECKPOINTS_TO_KEEP", "SUMMARY_EVERY",
    "HISTOGRAM_EVERY", "CHECKPOINT_EVERY", "DEFAULT_N_TRAIN_TOKENS",
]

logger = logging.getLogger(__name__)

# Schedules of the original training loop (module attributes so tests can shorten them).
SUMMARY_EVERY = 100       # scalar summaries and the perplexity / progress log line
HISTOGRAM_EVERY = 1250    # histogram summaries
CHECKPOINT_EVERY = 1250   # checkpoints (plus one at the end of the run)
# The original's default: the token count of the 1B Word Benchmark.
DEFAULT_N_TRAIN_TOKENS = 768648884
_TrainingGraph = TrainingGraph  # the name tests and benches have used


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


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

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
        graph = TrainingGraph(options, n_gpus)
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


def _training_loop(sess: tf.Session, graph: TrainingGraph, options: dict, data,
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
        graph = TrainingGraph(options, n_gpus, cluster, target_step)
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
        graph = TrainingGraph(options, 1)
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


def _cluster_training_loop(sess, graph: TrainingGraph, options: dict, data,
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
# Evaluation
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
