"""Training across machines on TensorFlow's distributed runtime.

Between-graph replication: every process runs a `tf.distribute.Server`;
parameter-server ("ps") tasks only hold variables (`server.join()`), every
worker task builds the same training graph with its variables placed on the
ps tasks by `tf.train.replica_device_setter`. Worker 0 is the chief: it
restores or initialises the variables, applies the updates and writes
checkpoints and summaries.

Updates are synchronous (the semantics of `tf.train.SyncReplicasOptimizer`:
a step aggregates one gradient per worker, gradients computed at an older
global step are dropped), but aggregated like the towers of one process:
`SyncReplicas` sums the workers' gradients in SUM accumulators on the ps
tasks (sparse ones de-duplicated and sorted first) and divides by the number
of gradients taken, so sparse rows are averaged over all workers, not over
the workers that touched them (what the MEAN sparse accumulator of
SyncReplicasOptimizer does). Clipping by global norm and Adagrad then run
once, on the aggregate. Every non-chief worker has its own token queue, so no
worker can run a step ahead of the others.

A cluster is given by flags (--ps_hosts, --worker_hosts, --job_name,
--task_index) or by the TF_CONFIG environment variable:

  {"cluster": {"ps": ["h0:2222"], "worker": ["h1:2222", "h2:2222"]},
   "task": {"type": "worker", "index": 0}}

A "chief" job of one task in TF_CONFIG becomes worker 0 (the other workers
follow it), so both conventions describe the same cluster.

Data: with at least as many files as workers each worker reads its own
files; with fewer, every worker reads every file and keeps every
n_workers-th line (`worker_shards`).

Waiting and ending (`ClusterRun`): while a task waits for others (the chief
for a step's gradients, a worker for the chief's update, either for its
session) a thread logs every `wait_log_every` seconds whom it waits for, by
task index and address, and whether that task's server answers at all. The
chief gives up after `worker_timeout` seconds (default: never) with
WorkerTimeoutError. A worker whose data runs out keeps pushing empty
gradients (counted as none in the average) so that the others go on. When
the chief ends the run (last step, its data ran out, timeout, Ctrl-C) it
stops the workers, waits until each has finished or is gone, then sends
every ps task the end-of-run signal: every process exits on its own.
"""
import argparse
import contextlib
import dataclasses
import glob
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import tensorflow.compat.v1 as tf

from .waiting import Watch, is_reachable

logger = logging.getLogger(__name__)

TF_CONFIG = "TF_CONFIG"
# Token a non-chief worker receives when the chief has reached the last step.
STOP_TOKEN = -1
# Values of the per-worker progress table on the ps (else: the global step of
# the worker's last pushed gradients).
NOTHING_PUSHED = -1
FINISHED = -2
# Default seconds between two "waiting for ..." log lines (--wait_log_every).
WAIT_LOG_EVERY = 30.0
# How long an ending chief waits for the workers to finish before it ends the
# ps tasks anyway, and the deadline of each end-of-run signal it sends.
END_WAIT_SECS = 60.0
SIGNAL_TIMEOUT_SECS = 10.0
# Exit status of a chief stopped by --worker_timeout (bin/train_elmo.py,
# bin/restart.py), so that a supervisor can tell it from a crash.
EXIT_WORKER_TIMEOUT = 3


class ClusterError(ValueError):
    """The cluster description (flags or TF_CONFIG) is incomplete or invalid."""


class WorkerTimeoutError(RuntimeError):
    """The chief waited longer than `worker_timeout` for the workers."""


@dataclass(frozen=True)
class Cluster:
    """One process's view of the cluster: every host, which task it is, and
    how it waits for the others (`wait_log_every` seconds between log
    lines; the chief stops after `worker_timeout` seconds without a step's
    gradients, None: never)."""
    ps_hosts: Tuple[str, ...]
    worker_hosts: Tuple[str, ...]
    job_name: str
    task_index: int
    worker_timeout: Optional[float] = None
    wait_log_every: float = WAIT_LOG_EVERY

    def __post_init__(self):
        if self.worker_timeout is not None and not self.worker_timeout > 0:
            raise ClusterError(f"--worker_timeout must be a positive number of seconds, "
                               f"got {self.worker_timeout}")
        if not self.wait_log_every > 0:
            raise ClusterError(f"--wait_log_every must be a positive number of seconds, "
                               f"got {self.wait_log_every}")
        for job, hosts in (("ps", self.ps_hosts), ("worker", self.worker_hosts)):
            if not hosts:
                raise ClusterError(f"the cluster has no '{job}' task: give at least "
                                   f"one host:port (--{job}_hosts)")
            for host in hosts:
                name, _, port = host.rpartition(":")
                if not name or not port.isdigit():
                    raise ClusterError(f"'{host}' in the {job} hosts is not host:port")
        if len(set(self.ps_hosts + self.worker_hosts)) != len(self.ps_hosts +
                                                              self.worker_hosts):
            raise ClusterError("a host:port appears twice in the cluster: "
                               f"ps {list(self.ps_hosts)}, worker {list(self.worker_hosts)}")
        if self.job_name not in ("ps", "worker"):
            raise ClusterError(f"job name must be 'ps' or 'worker', got {self.job_name!r}")
        n_tasks = len(self.ps_hosts if self.job_name == "ps" else self.worker_hosts)
        if not 0 <= self.task_index < n_tasks:
            raise ClusterError(f"task index {self.task_index} is out of range: the "
                               f"'{self.job_name}' job has {n_tasks} task(s)")

    @property
    def n_workers(self) -> int:
        return len(self.worker_hosts)

    @property
    def is_chief(self) -> bool:
        return self.job_name == "worker" and self.task_index == 0

    @property
    def spec(self) -> tf.train.ClusterSpec:
        return tf.train.ClusterSpec({"ps": list(self.ps_hosts),
                                     "worker": list(self.worker_hosts)})

    @property
    def worker_device(self) -> str:
        return f"/job:worker/task:{self.task_index}"

    @property
    def name(self) -> str:
        """How this task's log lines name it: "chief", "worker 2", "ps 0"."""
        return "chief" if self.is_chief else f"{self.job_name} {self.task_index}"

    def __str__(self) -> str:
        return (f"{self.job_name} {self.task_index} of a cluster of "
                f"{len(self.ps_hosts)} ps and {self.n_workers} worker(s)")


def _hosts(value: str, flag: str) -> Tuple[str, ...]:
    hosts = tuple(h.strip() for h in value.split(",") if h.strip())
    if not hosts:
        raise ClusterError(f"{flag} is empty: give comma-separated host:port pairs")
    return hosts


def cluster_from_flags(ps_hosts: Optional[str], worker_hosts: Optional[str],
                       job_name: Optional[str], task_index: int = 0) -> Cluster:
    """A Cluster from the comma-separated --ps_hosts / --worker_hosts flags."""
    missing = [flag for flag, value in (("--ps_hosts", ps_hosts),
                                        ("--worker_hosts", worker_hosts),
                                        ("--job_name", job_name)) if not value]
    if missing:
        raise ClusterError("a cluster needs --ps_hosts, --worker_hosts and --job_name; "
                           "missing " + ", ".join(missing))
    return Cluster(_hosts(ps_hosts, "--ps_hosts"), _hosts(worker_hosts, "--worker_hosts"),
                   job_name, int(task_index))


def cluster_from_tf_config(tf_config: str) -> Cluster:
    """A Cluster from the JSON of the TF_CONFIG environment variable."""
    try:
        config = json.loads(tf_config)
    except json.JSONDecodeError as err:
        raise ClusterError(f"{TF_CONFIG} is not valid JSON ({err})") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict) \
            or not isinstance(config.get("task"), dict):
        raise ClusterError(f"{TF_CONFIG} must hold an object with 'cluster' "
                           "({job: [host:port, ...]}) and 'task' ({type, index})")
    jobs: Dict[str, List[str]] = config["cluster"]
    unknown = set(jobs) - {"ps", "worker", "chief"}
    if unknown:
        raise ClusterError(f"{TF_CONFIG} has job(s) {sorted(unknown)}: only ps, worker "
                           "and chief are used in training")
    chief = list(jobs.get("chief", []))
    if len(chief) > 1:
        raise ClusterError(f"{TF_CONFIG}: the chief job must have one task, got {chief}")
    task_type = config["task"].get("type")
    task_index = config["task"].get("index", 0)
    if not isinstance(task_index, int):
        raise ClusterError(f"{TF_CONFIG}: task.index must be an integer, got {task_index!r}")
    if task_type == "chief":
        if not chief or task_index != 0:
            raise ClusterError(f"{TF_CONFIG}: task chief {task_index} but the chief "
                               f"job is {chief}")
        task_type = "worker"
    elif task_type == "worker":
        task_index += len(chief)  # the chief is worker 0
    elif task_type != "ps":
        raise ClusterError(f"{TF_CONFIG}: task.type must be ps, worker or chief, "
                           f"got {task_type!r}")
    return Cluster(tuple(jobs.get("ps", [])), tuple(chief + list(jobs.get("worker", []))),
                   task_type, task_index)


def resolve_cluster(ps_hosts: Optional[str] = None, worker_hosts: Optional[str] = None,
                    job_name: Optional[str] = None, task_index: int = 0,
                    environ: Optional[Mapping[str, str]] = None,
                    worker_timeout: Optional[float] = None,
                    wait_log_every: float = WAIT_LOG_EVERY) -> Optional[Cluster]:
    """The cluster of the flags if any is given, else of TF_CONFIG, else None
    (single-process training), with the given waiting policy."""
    if ps_hosts or worker_hosts or job_name:
        cluster = cluster_from_flags(ps_hosts, worker_hosts, job_name, task_index)
    else:
        tf_config = (os.environ if environ is None else environ).get(TF_CONFIG, "").strip()
        if not tf_config:
            return None
        try:
            has_cluster = bool(json.loads(tf_config).get("cluster"))
        except (json.JSONDecodeError, AttributeError):
            has_cluster = True  # let cluster_from_tf_config say what is wrong
        if not has_cluster:
            return None
        cluster = cluster_from_tf_config(tf_config)
    return dataclasses.replace(cluster, worker_timeout=worker_timeout,
                               wait_log_every=wait_log_every)


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """--ps_hosts, --worker_hosts, --job_name, --task_index for the bin scripts."""
    group = parser.add_argument_group(
        "cluster", "distributed training (default: one process; TF_CONFIG is read "
        "when these flags are absent)")
    group.add_argument("--ps_hosts", help="Comma-separated host:port of the ps tasks")
    group.add_argument("--worker_hosts", help="Comma-separated host:port of the "
                       "workers (the first is the chief)")
    group.add_argument("--job_name", choices=["ps", "worker"], help="This task's job")
    group.add_argument("--task_index", type=int, default=0,
                       help="This task's index in its job")
    group.add_argument("--worker_timeout", type=float, metavar="SECONDS",
                       help="Chief: stop the run (exit status "
                       f"{EXIT_WORKER_TIMEOUT}) when a step's gradients have not all "
                       "arrived after this long (default: wait forever)")
    group.add_argument("--wait_log_every", type=float, default=WAIT_LOG_EVERY,
                       metavar="SECONDS", help="Seconds between the log lines naming "
                       f"the tasks a task waits for ({WAIT_LOG_EVERY:g})")


def cluster_from_args(args: argparse.Namespace) -> Optional[Cluster]:
    return resolve_cluster(args.ps_hosts, args.worker_hosts, args.job_name, args.task_index,
                           worker_timeout=getattr(args, "worker_timeout", None),
                           wait_log_every=getattr(args, "wait_log_every", WAIT_LOG_EVERY))


def session_config(cluster: Cluster) -> tf.ConfigProto:
    """Soft placement (the towers ask for /gpu:k) and device filters: a worker
    talks to the ps tasks and itself only, so it neither waits for nor
    depends on the other workers."""
    config = tf.ConfigProto(allow_soft_placement=True)
    if cluster.job_name == "worker":
        config.device_filters.extend(["/job:ps", cluster.worker_device])
    return config


def start_server(cluster: Cluster) -> tf.distribute.Server:
    """Start this process's server (it listens on its host:port)."""
    logger.info("starting the server of %s", cluster)
    return tf.distribute.Server(cluster.spec, job_name=cluster.job_name,
                                task_index=cluster.task_index,
                                config=session_config(cluster), start=True)


def _end_of_run_signal(ps_index: int, send: bool) -> tf.Operation:
    """Send (chief) or wait for (the ps task itself) the end-of-run signal
    of ps task `ps_index`: a queue on that task, shared by name."""
    with tf.device(f"/job:ps/task:{ps_index}"):
        queue = tf.FIFOQueue(-1, tf.int64, shapes=[[]], name=f"end_of_run_{ps_index}",
                             shared_name=f"end_of_run_{ps_index}")
        return queue.enqueue(tf.constant(0, tf.int64)) if send else queue.dequeue().op


def run_parameter_server(cluster: Cluster) -> None:
    """Serve the variables until the chief sends the end-of-run signal.

    A ps task that was restarted after the chief ended never gets it: end
    it yourself."""
    server = start_server(cluster)
    own_device = f"/job:ps/task:{cluster.task_index}"
    with tf.Graph().as_default():
        end_of_run = _end_of_run_signal(cluster.task_index, send=False)
        config = tf.ConfigProto(device_filters=[own_device])
        with tf.Session(server.target, config=config) as sess:
            logger.info("%s: serving the variables until the chief ends the run",
                        cluster.name)
            sess.run(end_of_run)
    logger.info("%s: the chief ended the run; exiting", cluster.name)


@dataclass(frozen=True)
class DataShare:
    """One worker's training data: `files`, of which, with `line_shard`
    (index, count), only lines index, index + count, ... of each."""
    files: Tuple[str, ...]
    line_shard: Optional[Tuple[int, int]] = None


def worker_shards(filepattern: str, cluster: Optional[Cluster]) -> DataShare:
    """This worker's training data, from the sorted glob `filepattern`.

    At least as many files as workers: files[task_index::n_workers], whole.
    Fewer: every file, keeping lines task_index, task_index + n_workers, ...
    (the fallback of tf.data's auto-sharding), so one file serves any number
    of workers. Without a cluster: every file, whole. Logs the policy used.
    """
    shards = sorted(glob.glob(filepattern))
    if not shards:
        raise ValueError(f"no training file matches the pattern {filepattern!r}")
    if cluster is None:
        return DataShare(tuple(shards))
    n_workers, index = cluster.n_workers, cluster.task_index
    if len(shards) >= n_workers:
        share = DataShare(tuple(shards[index::n_workers]))
        logger.info("data split by file (%d files, %d workers): worker %d reads %d "
                    "file(s): %s", len(shards), n_workers, index, len(share.files),
                    ", ".join(share.files))
    else:
        share = DataShare(tuple(shards), (index, n_workers))
        logger.info("data split by line (%d file(s) < %d workers): worker %d reads "
                    "lines %d, %d, %d, ... of every file: %s", len(shards), n_workers,
                    index, index, index + n_workers, index + 2 * n_workers,
                    ", ".join(shards))
    return share


class SessionCreator(tf.train.SessionCreator):
    """The chief's or a worker's session for a tf.train.MonitoredSession.

    What MonitoredTrainingSession creates (a ChiefSessionCreator restores
    the latest checkpoint of `checkpoint_dir` or runs the init op; a
    WorkerSessionCreator waits until the chief has done so), but polling
    every `poll_secs` instead of their fixed 30 seconds, so that a worker
    (re)joins within a second of the model being ready.
    """

    def __init__(self, scaffold: tf.train.Scaffold, master: str, config: tf.ConfigProto,
                 is_chief: bool, checkpoint_dir: Optional[str],
                 poll_secs: float = 1.0, max_wait_secs: float = 2 * 3600,
                 waiting: Optional[Callable[[], object]] = None):
        self._scaffold, self._master, self._config = scaffold, master, config
        self._is_chief, self._checkpoint_dir = is_chief, checkpoint_dir
        self._poll_secs, self._max_wait_secs = poll_secs, max_wait_secs
        # a context manager around the wait (ClusterRun logs what it waits for)
        self._waiting = waiting or contextlib.nullcontext
        self.session: Optional[tf.Session] = None  # the last one created

    def create_session(self) -> tf.Session:
        self._scaffold.finalize()
        manager = tf.train.SessionManager(
            local_init_op=self._scaffold.local_init_op,
            ready_op=self._scaffold.ready_op,
            ready_for_local_init_op=self._scaffold.ready_for_local_init_op,
            graph=tf.get_default_graph(), recovery_wait_secs=self._poll_secs)
        with self._waiting():
            if self._is_chief:
                self.session = manager.prepare_session(
                    self._master, saver=self._scaffold.saver,
                    checkpoint_dir=self._checkpoint_dir, config=self._config,
                    init_op=self._scaffold.init_op)
            else:
                self.session = manager.wait_for_session(
                    self._master, config=self._config, max_wait_secs=self._max_wait_secs)
        return self.session


# ---------------------------------------------------------------------------
# Synchronous updates
# ---------------------------------------------------------------------------

def _sorted_unique_slices(grad: tf.IndexedSlices) -> tf.IndexedSlices:
    """The same sparse gradient with each index once, indices ascending (what
    the sparse accumulator needs to add gradients row by row)."""
    unique_indices, positions = tf.unique(tf.cast(grad.indices, tf.int64))
    summed = tf.math.unsorted_segment_sum(grad.values, positions,
                                          tf.shape(unique_indices)[0])
    order = tf.argsort(unique_indices)
    return tf.IndexedSlices(tf.gather(summed, order), tf.gather(unique_indices, order),
                            grad.dense_shape)


def _empty_slices(variable: tf.Variable, dtype: tf.DType) -> tf.IndexedSlices:
    """A sparse gradient of `variable` with no rows (values [0, ...])."""
    shape = variable.shape.as_list()
    return tf.IndexedSlices(tf.zeros([0] + shape[1:], dtype), tf.zeros([0], tf.int64),
                            tf.constant(shape, tf.int64))


class SyncReplicas(object):
    """Synchronous aggregation of the workers' gradients (graph pieces).

    Per step, every worker pushes its (tower-averaged) gradients with its
    local step (`push_gradients`). The chief then takes n_workers gradients
    from every accumulator and divides by their count
    (`aggregated_gradients`), applies the update, and enqueues the new
    global step to every other worker (`finish_update`; STOP_TOKEN once the
    target step is reached). A non-chief worker waits for that token
    (`wait_for_update`) before it computes its next gradient.

    Args:
      cluster: this worker's Cluster.
      global_step: the float32 global step variable (on a ps task).
    Attributes:
      local_step: int64 []: the global step the pushed gradients belong to.
        The chief reads the global step; a non-chief worker feeds this
        placeholder with its last token.
      chief_init_op: chief only (after `aggregated_gradients`): sets every
        accumulator's step to the global step; run after each restore.
      stop_op: chief only: sends STOP_TOKEN to every other worker.
      resync_op: chief only: sends the global step to every other worker.
        A restarted chief runs it once: a worker whose gradients the dead
        chief had taken waits for a token that would never come; a worker
        that was not waiting pushes one extra gradient (the next update
        then averages over n_workers + 1 gradients).
      worker_steps: chief only: int64 [n_workers]: per worker, the global
        step of its last pushed gradients, NOTHING_PUSHED or FINISHED
        (worker 0, the chief, is never recorded).
      end_ops: chief only: one op per ps task sending it the end-of-run
        signal (`run_parameter_server` then returns).
      idle_op: non-chief only (after `push_gradients`): pushes empty
        gradients that count as none in the average, then waits for the
        token like train_op; for a worker whose data ran out.
      finished_op: non-chief only: records FINISHED for this worker.
    """

    def __init__(self, cluster: Cluster, global_step: tf.Variable):
        self.n_workers = cluster.n_workers
        self.is_chief = cluster.is_chief
        self._global_step = global_step
        # (accumulator, variable) per pushed gradient
        self._accumulators: List[Tuple[object, tf.Variable]] = []
        with tf.device(global_step.device):
            # one queue per non-chief worker, shared by name across the processes
            self._token_queues = [
                tf.FIFOQueue(-1, tf.int64, shapes=[[]], name=f"sync_token_queue_{w}",
                             shared_name=f"sync_token_queue_{w}")
                for w in range(1, self.n_workers)]
            # how many gradients each take sums (n_workers unless a restarted
            # worker pushed twice for one step or an idle one pushed empty ones)
            self._count = tf.ConditionalAccumulator(
                tf.float32, shape=[], shared_name="sync_gradient_count",
                name="sync_gradient_count", reduction_type="SUM")
            # worker index -> global step of its last push: what the chief
            # names while it waits. A table, not a variable: needs no
            # initialisation and stays out of the checkpoints.
            self._worker_steps_table = tf.raw_ops.MutableHashTableV2(
                key_dtype=tf.int64, value_dtype=tf.int64, name="sync_worker_steps",
                shared_name="sync_worker_steps")
            if self.is_chief:
                self.local_step = tf.cast(global_step, tf.int64)
                self.stop_op = tf.group(*[queue.enqueue(tf.constant(STOP_TOKEN, tf.int64))
                                          for queue in self._token_queues])
                self.resync_op = tf.group(*[queue.enqueue(self.local_step)
                                            for queue in self._token_queues])
                self.worker_steps = tf.raw_ops.LookupTableFindV2(
                    table_handle=self._worker_steps_table,
                    keys=tf.range(self.n_workers, dtype=tf.int64),
                    default_value=tf.constant(NOTHING_PUSHED, tf.int64))
            else:
                self.local_step = tf.placeholder(tf.int64, [], name="sync_local_step")
                self._own_queue = self._token_queues[cluster.task_index - 1]
                self._task_index = cluster.task_index
                self.finished_op = self._record_step(tf.constant(FINISHED, tf.int64))
        if self.is_chief:
            self.end_ops = [_end_of_run_signal(k, send=True)
                            for k in range(len(cluster.ps_hosts))]

    def _record_step(self, step: tf.Tensor) -> tf.Operation:
        """Non-chief: worker_steps[task_index] = step (on the ps)."""
        return tf.raw_ops.LookupTableInsertV2(
            table_handle=self._worker_steps_table,
            keys=tf.constant([self._task_index], tf.int64), values=tf.reshape(step, [1]))

    def _accumulator(self, kind, grad, variable: tf.Variable):
        shared_name = variable.op.name + "/sync_grad_accumulator"
        accumulator = kind(grad.dtype, shape=variable.shape, shared_name=shared_name,
                           name=shared_name.replace("/", "_"), reduction_type="SUM")
        self._accumulators.append((accumulator, variable))
        return accumulator

    def push_gradients(self, grads_and_vars: Sequence[Tuple[tf.Tensor, tf.Variable]]
                       ) -> tf.Operation:
        """Add this worker's gradients (None ones skipped) to the accumulators,
        each on its variable's ps task; the count accumulator gets 1 after all.
        A non-chief worker also gets `idle_op`."""
        apply_ops, empty_ops = [], []
        for grad, variable in grads_and_vars:
            if grad is None:
                continue
            with tf.device(variable.device):
                if isinstance(grad, tf.IndexedSlices):
                    accumulator = self._accumulator(tf.SparseConditionalAccumulator,
                                                    grad, variable)
                    apply_ops.append(accumulator.apply_indexed_slices_grad(
                        _sorted_unique_slices(grad), local_step=self.local_step))
                    if not self.is_chief:
                        empty_ops.append(accumulator.apply_indexed_slices_grad(
                            _empty_slices(variable, grad.dtype),
                            local_step=self.local_step))
                else:
                    accumulator = self._accumulator(tf.ConditionalAccumulator,
                                                    grad, variable)
                    apply_ops.append(accumulator.apply_grad(grad,
                                                            local_step=self.local_step))
                    if not self.is_chief:
                        empty_ops.append(accumulator.apply_grad(
                            tf.zeros(variable.shape, grad.dtype),
                            local_step=self.local_step))
        if not self.is_chief:
            self.idle_op = self.wait_for_update(self._count_push(empty_ops, 0.0))
        return self._count_push(apply_ops, 1.0)

    def _count_push(self, apply_ops: List[tf.Operation], count: float) -> tf.Operation:
        """After `apply_ops`: add `count` gradients to the count accumulator and
        (non-chief) record the step in worker_steps."""
        with tf.control_dependencies(apply_ops), tf.device(self._global_step.device):
            count_op = self._count.apply_grad(tf.constant(count), local_step=self.local_step)
            if self.is_chief:
                return count_op
            return tf.group(count_op, self._record_step(self.local_step))

    def aggregated_gradients(self, push_op: tf.Operation
                             ) -> List[Tuple[tf.Tensor, tf.Variable]]:
        """Chief: the average over the gradients of all workers of this step,
        (dense Tensor or IndexedSlices with unique indices, variable) per
        pushed variable; blocks until every worker has pushed."""
        if not self.is_chief:
            raise RuntimeError("only the chief (worker 0) aggregates gradients")
        aggregated = []
        with tf.control_dependencies([push_op]):
            with tf.device(self._global_step.device):
                count = self._count.take_grad(self.n_workers)
            for accumulator, variable in self._accumulators:
                with tf.device(variable.device):
                    if isinstance(accumulator, tf.SparseConditionalAccumulator):
                        grad = accumulator.take_indexed_slices_grad(self.n_workers)
                        grad = tf.IndexedSlices(grad.values / count, grad.indices,
                                                grad.dense_shape)
                    else:
                        grad = accumulator.take_grad(self.n_workers) / count
                aggregated.append((grad, variable))
        with tf.device(self._global_step.device):
            self.chief_init_op = tf.group(*[
                accumulator.set_global_step(self.local_step)
                for accumulator in [self._count] + [a for a, _ in self._accumulators]])
        return aggregated

    def finish_update(self, update_op: tf.Operation, target_step: int) -> tf.Tensor:
        """Chief: after `update_op`, send the new global step (STOP_TOKEN
        from `target_step` on) to every other worker. Returns the new global
        step, int64 []."""
        with tf.device(self._global_step.device), tf.control_dependencies([update_op]):
            new_step = tf.cast(self._global_step.read_value(), tf.int64)
            token = tf.where(new_step >= target_step,
                             tf.constant(STOP_TOKEN, tf.int64), new_step)
            enqueue_ops = [queue.enqueue(token) for queue in self._token_queues]
        with tf.control_dependencies(enqueue_ops):
            return tf.identity(new_step, name="sync_global_step")

    def wait_for_update(self, push_op: tf.Operation) -> tf.Tensor:
        """Non-chief: after `push_op`, wait for the chief's token: int64 [],
        the global step to compute the next gradients at, or STOP_TOKEN."""
        if self.is_chief:
            raise RuntimeError("the chief does not wait for tokens")
        with tf.device(self._global_step.device), tf.control_dependencies([push_op]):
            return tf.identity(self._own_queue.dequeue(), name="sync_token")


# ---------------------------------------------------------------------------
# Waiting visibly, and ending the run
# ---------------------------------------------------------------------------

class ClusterRun(object):
    """What a worker task does around its training session besides training:
    it logs whom it waits for, the chief stops after `worker_timeout`, and
    the run ends so that every task exits on its own.

    Build it in the training graph, after `replicas` (it runs their ops).

      run = ClusterRun(cluster, server.target, graph.replicas, save_dir)
      chief_restarted = run.variables_are_initialized(scaffold)
      with run.ending(), tf.train.MonitoredSession(
              session_creator=run.session_creator(scaffold)) as sess:
          ... run.run_step(sess, fetches, feed_dict, step) ...

    Ctrl-C reaches a task blocked in one of these waits (`bilm.waiting.Watch`).
    """

    def __init__(self, cluster: Cluster, target: str, replicas: SyncReplicas,
                 checkpoint_dir: str):
        self.cluster = cluster
        self._target, self._replicas = target, replicas
        self._checkpoint_dir = checkpoint_dir
        self._graph = tf.get_default_graph()
        self._config = session_config(cluster)
        self._watch = Watch(cluster.name, cluster.wait_log_every)
        self._side_session: Optional[tf.Session] = None
        self._side_session_lock = threading.Lock()
        self._creator: Optional[SessionCreator] = None
        self._interrupted = False
        self._step_options = None
        if cluster.is_chief and cluster.worker_timeout is not None:
            self._step_options = tf.RunOptions(
                timeout_in_ms=int(cluster.worker_timeout * 1000))

    # -- waiting ------------------------------------------------------------

    def variables_are_initialized(self, scaffold: tf.train.Scaffold) -> bool:
        """Chief: whether the ps tasks hold initialised variables already (a
        chief that finds them so was restarted while they kept running).
        False on the other workers."""
        if not self.cluster.is_chief:
            return False
        scaffold.finalize()
        with self._watch.listening(), self._watch.waiting(self._describe_ps_wait) as wait:
            for _ in range(60):
                try:
                    with tf.Session(self._target, graph=self._graph,
                                    config=self._config) as sess:
                        wait.cancel = lambda: self._cancel(sess)
                        return len(self._interruptible(sess.run, scaffold.ready_op)) == 0
                except (tf.errors.UnavailableError, tf.errors.AbortedError) as err:
                    logger.info("a ps task is not reachable yet (%s); retrying",
                                err.message[:200])
                    time.sleep(1.0)
        return False

    def session_creator(self, scaffold: tf.train.Scaffold) -> SessionCreator:
        """The chief's or a worker's SessionCreator; logs while it waits (for
        the ps tasks, or for the chief to initialise the variables)."""
        if self.cluster.is_chief:
            describe = self._describe_ps_wait
        else:
            describe = lambda: "the chief to initialise the variables" + \
                self._unreachable_suffix("worker", [0])
        self._creator = SessionCreator(scaffold, self._target, self._config,
                                       self.cluster.is_chief, self._checkpoint_dir,
                                       waiting=lambda: self._watch.waiting(describe))
        return self._creator

    def run_step(self, sess, fetches, feed_dict: dict, step: int):
        """sess.run(fetches, feed_dict) of the training step at global step
        `step`, logging whom it waits for; on the chief, WorkerTimeoutError
        after worker_timeout seconds."""
        with self._watch.waiting(lambda: self._describe_step_wait(step)) as wait:
            if self._creator is not None and self._creator.session is not None:
                wait.cancel = lambda: self._cancel(self._creator.session)
            try:
                return self._interruptible(sess.run, fetches, feed_dict=feed_dict,
                                           options=self._step_options)
            except tf.errors.DeadlineExceededError:
                if self._step_options is None:
                    raise
                raise WorkerTimeoutError(self._timeout_message(step)) from None

    def _cancel(self, session: tf.Session) -> None:
        """Ctrl-C during a wait (the watch thread): end the blocked call."""
        self._interrupted = True
        session.close()

    def _interruptible(self, run: Callable, *args, **kwargs):
        """run(*args, **kwargs); KeyboardInterrupt when Ctrl-C closed its session
        (the call then fails with CancelledError, or with RuntimeError if the
        session was closed before the call began)."""
        try:
            return run(*args, **kwargs)
        except (tf.errors.CancelledError, RuntimeError):
            if self._interrupted:
                raise KeyboardInterrupt from None
            raise

    def _describe_ps_wait(self) -> str:
        return "the ps task(s) to serve the variables" + \
            self._unreachable_suffix("ps", range(len(self.cluster.ps_hosts)))

    def idle_until_stopped(self, sess, step: int) -> int:
        """Non-chief whose data ran out: push empty gradients at each global
        step until the chief ends the run (so nobody waits for this worker).
        Returns the last global step."""
        logger.warning("%s: the data ran out at global step %d; sending empty "
                       "gradients (not counted in the average) until the chief ends "
                       "the run", self.cluster.name, step)
        while True:
            token = self.run_step(sess, self._replicas.idle_op,
                                  {self._replicas.local_step: step}, step)
            if token == STOP_TOKEN:
                return step
            step = int(token)

    def _describe_step_wait(self, step: int) -> str:
        if not self.cluster.is_chief:
            return f"the chief's update of global step {step}" + \
                self._unreachable_suffix("worker", [0])
        return f"the gradients of global step {step} from " + self._missing_workers(step)

    def _missing_workers(self, step: int) -> str:
        """The workers that have not pushed gradients for `step`, with their
        address, last push and whether their server answers."""
        down_ps = self._unreachable_suffix("ps", range(len(self.cluster.ps_hosts)))
        if down_ps:
            return "the workers" + down_ps
        steps = self._side_run(self._replicas.worker_steps)
        missing = [k for k in range(1, self.cluster.n_workers) if steps[k] < step]
        if not missing:
            return "the ps task(s): every worker has pushed its gradients"
        return ", ".join(self._worker_state(k, int(steps[k])) for k in missing)

    def _worker_state(self, index: int, last_step: int) -> str:
        host = self.cluster.worker_hosts[index]
        if last_step == NOTHING_PUSHED:
            pushed = "no gradients yet"
        elif last_step == FINISHED:
            pushed = "finished"
        else:
            pushed = f"last gradients for global step {last_step}"
        answer = "" if is_reachable(host) else "; its server does not answer: " \
            "not started yet, or ended"
        return f"worker {index} ({host}: {pushed}{answer})"

    def _unreachable_suffix(self, job: str, indices: Iterable[int]) -> str:
        """" (ps 1 at h:p does not answer: ...)" for each task not reachable."""
        hosts = self.cluster.ps_hosts if job == "ps" else self.cluster.worker_hosts
        down = [f"{'chief' if job == 'worker' and k == 0 else f'{job} {k}'} at {hosts[k]}"
                for k in indices if not is_reachable(hosts[k])]
        if not down:
            return ""
        return f" ({', '.join(down)}: server does not answer: not started yet, or ended)"

    def _side_run(self, fetches):
        """Run `fetches` in a session of its own (the watch thread's, beside
        the training session), giving up after SIGNAL_TIMEOUT_SECS."""
        with self._side_session_lock:
            if self._side_session is None:
                self._side_session = tf.Session(self._target, graph=self._graph,
                                                config=self._config)
        return self._side_session.run(fetches, options=_deadline(SIGNAL_TIMEOUT_SECS))

    def _timeout_message(self, step: int) -> str:
        try:
            missing = self._missing_workers(step)
        except tf.errors.OpError as err:
            missing = f"the workers (could not ask the ps: {err.message[:200]})"
        latest = tf.train.latest_checkpoint(self._checkpoint_dir)
        return (f"chief: waited --worker_timeout {self.cluster.worker_timeout:g} s for the "
                f"gradients of global step {step} from {missing}. Stopping the run; "
                f"its last checkpoint is {latest or 'none (no checkpoint written yet)'}: "
                "run the same commands again to resume from it")

    # -- ending -------------------------------------------------------------

    @contextlib.contextmanager
    def ending(self):
        """Wrap the training session (enter this first, so that it ends after
        the session is closed). When the block ends normally, or the chief
        stops on WorkerTimeoutError or KeyboardInterrupt, the run ends for
        everyone: a worker records that it finished; the chief stops the
        workers (if not already), waits for each to finish or be gone (at
        most END_WAIT_SECS), then ends the ps tasks. Any other error ends
        nothing: the task may be restarted to resume the run."""
        try:
            with self._watch.listening():
                yield
        except (WorkerTimeoutError, KeyboardInterrupt):
            if self.cluster.is_chief:
                self._end_run(stop_workers=True)
            raise
        else:
            if self.cluster.is_chief:
                self._end_run(stop_workers=False)
            else:
                self._signal(self._replicas.finished_op, "record that it finished")
        finally:
            with self._side_session_lock:
                if self._side_session is not None:
                    self._side_session.close()
                    self._side_session = None

    def _end_run(self, stop_workers: bool) -> None:
        if stop_workers:
            self._signal(self._replicas.stop_op, "stop the workers")
        self._wait_for_workers_to_finish()
        for index, end_op in enumerate(self._replicas.end_ops):
            host = self.cluster.ps_hosts[index]
            if not is_reachable(host):
                logger.info("chief: ps %d (%s) is gone already", index, host)
            elif self._signal(end_op, f"end ps {index} ({host}); end it yourself"):
                logger.info("chief: sent ps %d (%s) the end of the run", index, host)

    def _wait_for_workers_to_finish(self) -> None:
        """Until every other worker has recorded FINISHED or is gone."""
        started = last_log = time.monotonic()
        pending, gone = list(range(1, self.cluster.n_workers)), []
        while pending:
            try:
                steps = self._side_run(self._replicas.worker_steps)
            except tf.errors.OpError as err:
                logger.warning("chief: cannot ask the ps whether the workers finished "
                               "(%s)", err.message[:200])
                return
            gone += [k for k in pending if steps[k] != FINISHED
                     and not is_reachable(self.cluster.worker_hosts[k])]
            pending = [k for k in pending if steps[k] != FINISHED and k not in gone]
            now = time.monotonic()
            if pending and now - started > END_WAIT_SECS:
                logger.warning("chief: %s did not finish within %.0f s of the end of "
                               "the run; ending the ps tasks anyway",
                               ", ".join(self._worker_state(k, int(steps[k]))
                                         for k in pending), END_WAIT_SECS)
                return
            if pending and now - last_log > self.cluster.wait_log_every:
                last_log = now
                logger.info("chief: waiting %.0f s for %s to finish", now - started,
                            ", ".join(self._worker_state(k, int(steps[k]))
                                      for k in pending))
            if pending:
                time.sleep(0.2)
        if gone:
            logger.info("chief: every worker finished but %s, whose server does not "
                        "answer", ", ".join(f"worker {k} ({self.cluster.worker_hosts[k]})"
                                            for k in gone))
        elif self.cluster.n_workers > 1:
            logger.info("chief: every worker finished")

    def _signal(self, op: tf.Operation, what: str) -> bool:
        """Run `op` (a short signal to the ps) with a deadline; False, logged,
        when it fails."""
        try:
            self._side_run(op)
            return True
        except tf.errors.OpError as err:
            logger.warning("%s: could not %s (%s)", self.cluster.name, what,
                           err.message[:200])
            return False


def _deadline(seconds: float) -> tf.RunOptions:
    return tf.RunOptions(timeout_in_ms=int(seconds * 1000))
