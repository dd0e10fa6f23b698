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
"""
import argparse
import glob
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import tensorflow.compat.v1 as tf

logger = logging.getLogger(__name__)

TF_CONFIG = "TF_CONFIG"
# Token a non-chief worker receives when the chief has reached the last step.
STOP_TOKEN = -1


class ClusterError(ValueError):
    """The cluster description (flags or TF_CONFIG) is incomplete or invalid."""


@dataclass(frozen=True)
class Cluster:
    """One process's view of the cluster: every host, and which task it is."""
    ps_hosts: Tuple[str, ...]
    worker_hosts: Tuple[str, ...]
    job_name: str
    task_index: int

    def __post_init__(self):
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
                    environ: Optional[Mapping[str, str]] = None) -> Optional[Cluster]:
    """The cluster of the flags if any is given, else of TF_CONFIG, else None
    (single-process training)."""
    if ps_hosts or worker_hosts or job_name:
        return cluster_from_flags(ps_hosts, worker_hosts, job_name, task_index)
    tf_config = (os.environ if environ is None else environ).get(TF_CONFIG, "").strip()
    if not tf_config:
        return None
    try:
        has_cluster = bool(json.loads(tf_config).get("cluster"))
    except (json.JSONDecodeError, AttributeError):
        has_cluster = True  # let cluster_from_tf_config say what is wrong
    return cluster_from_tf_config(tf_config) if has_cluster else None


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


def cluster_from_args(args: argparse.Namespace) -> Optional[Cluster]:
    return resolve_cluster(args.ps_hosts, args.worker_hosts, args.job_name, args.task_index)


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


def run_parameter_server(cluster: Cluster) -> None:
    """Serve the variables until the process is ended (never returns)."""
    start_server(cluster).join()


def worker_shards(filepattern: str, cluster: Optional[Cluster]) -> List[str]:
    """This worker's training files: shards[task_index::n_workers] of the
    sorted glob (all of them without a cluster)."""
    shards = sorted(glob.glob(filepattern))
    if not shards:
        raise ValueError(f"no training file matches the pattern {filepattern!r}")
    if cluster is None:
        return shards
    mine = shards[cluster.task_index::cluster.n_workers]
    if not mine:
        raise ValueError(f"worker {cluster.task_index} gets no training file: "
                         f"{filepattern!r} matches {len(shards)} file(s) for "
                         f"{cluster.n_workers} workers; split the data into at least "
                         "as many shards as workers (bin/split_corpus.py)")
    return mine


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
                 poll_secs: float = 1.0, max_wait_secs: float = 2 * 3600):
        self._scaffold, self._master, self._config = scaffold, master, config
        self._is_chief, self._checkpoint_dir = is_chief, checkpoint_dir
        self._poll_secs, self._max_wait_secs = poll_secs, max_wait_secs

    def create_session(self) -> tf.Session:
        self._scaffold.finalize()
        manager = tf.train.SessionManager(
            local_init_op=self._scaffold.local_init_op,
            ready_op=self._scaffold.ready_op,
            ready_for_local_init_op=self._scaffold.ready_for_local_init_op,
            graph=tf.get_default_graph(), recovery_wait_secs=self._poll_secs)
        if self._is_chief:
            return manager.prepare_session(
                self._master, saver=self._scaffold.saver,
                checkpoint_dir=self._checkpoint_dir, config=self._config,
                init_op=self._scaffold.init_op)
        return manager.wait_for_session(self._master, config=self._config,
                                        max_wait_secs=self._max_wait_secs)


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
            # worker pushed twice for one step)
            self._count = tf.ConditionalAccumulator(
                tf.float32, shape=[], shared_name="sync_gradient_count",
                name="sync_gradient_count", reduction_type="SUM")
            if self.is_chief:
                self.local_step = tf.cast(global_step, tf.int64)
                self.stop_op = tf.group(*[queue.enqueue(tf.constant(STOP_TOKEN, tf.int64))
                                          for queue in self._token_queues])
                self.resync_op = tf.group(*[queue.enqueue(self.local_step)
                                            for queue in self._token_queues])
            else:
                self.local_step = tf.placeholder(tf.int64, [], name="sync_local_step")
                self._own_queue = self._token_queues[cluster.task_index - 1]

    def _accumulator(self, kind, grad, variable: tf.Variable):
        shared_name = variable.op.name + "/sync_grad_accumulator"
        accumulator = kind(grad.dtype, shape=variable.shape, shared_name=shared_name,
                           name=shared_name.replace("/", "_"), reduction_type="SUM")
        self._accumulators.append((accumulator, variable))
        return accumulator

    def push_gradients(self, grads_and_vars: Sequence[Tuple[tf.Tensor, tf.Variable]]
                       ) -> tf.Operation:
        """Add this worker's gradients (None ones skipped) to the accumulators,
        each on its variable's ps task; the count accumulator gets 1 after all."""
        apply_ops = []
        for grad, variable in grads_and_vars:
            if grad is None:
                continue
            with tf.device(variable.device):
                if isinstance(grad, tf.IndexedSlices):
                    accumulator = self._accumulator(tf.SparseConditionalAccumulator,
                                                    grad, variable)
                    apply_ops.append(accumulator.apply_indexed_slices_grad(
                        _sorted_unique_slices(grad), local_step=self.local_step))
                else:
                    accumulator = self._accumulator(tf.ConditionalAccumulator,
                                                    grad, variable)
                    apply_ops.append(accumulator.apply_grad(grad,
                                                            local_step=self.local_step))
        with tf.control_dependencies(apply_ops), tf.device(self._global_step.device):
            return self._count.apply_grad(tf.constant(1.0), local_step=self.local_step)

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
# A cluster of processes on this machine
# ---------------------------------------------------------------------------

def free_ports(n: int) -> List[int]:
    """n distinct free TCP ports of localhost (bound to port 0 together, then
    released for the servers to take)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class LocalCluster(object):
    """Runs `command` once per task of a cluster on localhost, adding each
    task's --ps_hosts/--worker_hosts/--job_name/--task_index.

    Every line a task prints goes to `echo` prefixed with "[job index] " and
    is kept in `logs[(job, index)]` (across restarts of the task). Leaving
    the `with` block ends every process still running.
    """

    def __init__(self, command: Sequence[str], n_ps: int, n_workers: int,
                 env: Optional[Mapping[str, str]] = None,
                 echo: Optional[Callable[[str], None]] = print):
        if n_ps < 1 or n_workers < 1:
            raise ClusterError(f"a cluster needs at least one ps and one worker, got "
                               f"{n_ps} ps and {n_workers} worker(s)")
        ports = free_ports(n_ps + n_workers)
        self.ps_hosts = [f"localhost:{port}" for port in ports[:n_ps]]
        self.worker_hosts = [f"localhost:{port}" for port in ports[n_ps:]]
        self.command = list(command)
        self.env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
        self.echo = echo
        self.processes: Dict[Tuple[str, int], subprocess.Popen] = {}
        self.logs: Dict[Tuple[str, int], List[str]] = {}
        self._readers: List[threading.Thread] = []

    def task_flags(self, job: str, index: int) -> List[str]:
        return ["--ps_hosts", ",".join(self.ps_hosts),
                "--worker_hosts", ",".join(self.worker_hosts),
                "--job_name", job, "--task_index", str(index)]

    def start(self, job: str, index: int) -> subprocess.Popen:
        """Start (or restart, once it has ended) one task."""
        task = (job, index)
        if task in self.processes and self.processes[task].poll() is None:
            raise RuntimeError(f"{job} {index} is still running")
        process = subprocess.Popen(self.command + self.task_flags(job, index),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=self.env, text=True,
                                   errors="replace")
        self.processes[task] = process
        self.logs.setdefault(task, [])
        reader = threading.Thread(target=self._read, args=(task, process), daemon=True)
        reader.start()
        self._readers.append(reader)
        return process

    def _read(self, task: Tuple[str, int], process: subprocess.Popen) -> None:
        prefix = f"[{task[0]} {task[1]}] "
        for line in process.stdout:
            self.logs[task].append(line)
            if self.echo is not None:
                self.echo(prefix + line.rstrip("\n"))
        process.stdout.close()

    def start_all(self) -> None:
        for index in range(len(self.ps_hosts)):
            self.start("ps", index)
        for index in range(len(self.worker_hosts)):
            self.start("worker", index)

    def kill(self, job: str, index: int) -> None:
        """SIGKILL one task (a crash: no clean-up in the process)."""
        process = self.processes[(job, index)]
        if process.poll() is None:
            process.kill()
        process.wait()

    def wait_for_workers(self, timeout: float) -> Dict[int, Optional[int]]:
        """Wait until every worker has ended, or one has failed, or `timeout`
        seconds; returns each worker's exit code (None: still running)."""
        deadline = time.monotonic() + timeout
        while True:
            codes = {index: self.processes[("worker", index)].poll()
                     for index in range(len(self.worker_hosts))}
            done = all(code is not None for code in codes.values())
            failed = any(code not in (None, 0) for code in codes.values())
            if done or failed or time.monotonic() > deadline:
                return codes
            time.sleep(0.2)

    def stop(self, grace_secs: float = 5.0) -> None:
        """End every running task: SIGTERM, then SIGKILL after `grace_secs`."""
        running = [p for p in self.processes.values() if p.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_secs
        for process in running:
            try:
                process.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for reader in self._readers:
            reader.join(timeout=2)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def launch_local_cluster(command: Sequence[str], n_ps: int, n_workers: int,
                         timeout: float) -> int:
    """Run a cluster on localhost until its workers end: 0 when they all
    succeeded, 1 when one failed (the others are then ended, since they
    would wait for it forever) or `timeout` seconds passed."""
    with LocalCluster(command, n_ps, n_workers, echo=lambda line: print(line, flush=True)
                      ) as cluster:
        logger.info("ps %s, workers %s", ",".join(cluster.ps_hosts),
                    ",".join(cluster.worker_hosts))
        cluster.start_all()
        codes = cluster.wait_for_workers(timeout)
        failed = {index: code for index, code in codes.items() if code not in (None, 0)}
        if failed:
            logger.error("worker(s) failed (exit codes %s); ending the cluster", failed)
            return 1
        if any(code is None for code in codes.values()):
            logger.error("the workers did not finish within %.0f s; ending the cluster",
                         timeout)
            return 1
        logger.info("all %d workers finished; ending the ps tasks", n_workers)
        return 0
