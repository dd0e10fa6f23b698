"""A training cluster as processes on this machine (bin/launch_local_cluster.py
and the tests): every ps task and worker runs the same command plus its
place in the cluster, on free localhost ports.

Needs no TensorFlow: the tasks import it, the launcher does not.
"""
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)


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
            raise ValueError(f"a cluster needs at least one ps and one worker, got "
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

    def start(self, job: str, index: int,
              command: Optional[Sequence[str]] = None) -> subprocess.Popen:
        """Start (or restart, once it has ended) one task, with `command`
        instead of the cluster's if given."""
        task = (job, index)
        if task in self.processes and self.processes[task].poll() is None:
            raise RuntimeError(f"{job} {index} is still running")
        command = self.command if command is None else list(command)
        process = subprocess.Popen(command + self.task_flags(job, index),
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
        return self._wait_for("worker", len(self.worker_hosts), timeout)

    def wait_for_ps(self, timeout: float) -> Dict[int, Optional[int]]:
        """Wait until every ps task has ended, or one has failed, or `timeout`
        seconds; returns each ps task's exit code (None: still running)."""
        return self._wait_for("ps", len(self.ps_hosts), timeout)

    def _wait_for(self, job: str, n_tasks: int, timeout: float) -> Dict[int, Optional[int]]:
        deadline = time.monotonic() + timeout
        while True:
            codes = {index: self.processes[(job, index)].poll() for index in range(n_tasks)}
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
                         timeout: float, ps_exit_secs: float = 30.0) -> int:
    """Run a cluster on localhost until it ends: 0 when every worker
    succeeded and every ps task then exited with 0 on its own (one still
    running `ps_exit_secs` after the workers is ended, with a warning);
    1 when a task failed (the others are then ended: they could wait for it
    forever) or `timeout` seconds passed."""
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
        logger.info("all %d workers finished; waiting for the ps tasks to end", n_workers)
        ps_codes = cluster.wait_for_ps(ps_exit_secs)
        failed = {index: code for index, code in ps_codes.items() if code not in (None, 0)}
        if failed:
            logger.error("ps task(s) failed (exit codes %s)", failed)
            return 1
        running = [index for index, code in ps_codes.items() if code is None]
        if running:
            logger.warning("ps task(s) %s did not end within %.0f s of the workers "
                           "(they missed the chief's end-of-run signal); ending them",
                           running, ps_exit_secs)
        else:
            logger.info("every task ended on its own with exit status 0")
        return 0
