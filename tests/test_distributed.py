"""Training on TensorFlow's distributed runtime (bilm/cluster.py), on localhost
(bilm/local_cluster.py), and waiting visibly (bilm/waiting.py).

Every cluster here is a set of local processes on free ports (`LocalCluster`),
bounded by timeouts and ended when the test ends, pass or fail. The tiny
model trains a step in tens of milliseconds; most of each test's time is the
processes importing TensorFlow.

This file is also the program of the step-equality test's tasks:
  python tests/test_distributed.py STEP_DIR --ps_hosts ... --job_name ...
"""
import argparse
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import tensorflow.compat.v1 as tf  # noqa: E402

from bilm import training  # noqa: E402
from bilm.cluster import (EXIT_WORKER_TIMEOUT, Cluster, ClusterError,  # noqa: E402
                          DataShare, add_cluster_arguments, cluster_from_args,
                          cluster_from_tf_config, resolve_cluster, run_parameter_server,
                          worker_shards)
from bilm.corpus import count_train_tokens  # noqa: E402
from bilm.data import BidirectionalLMDataset, LMDataset  # noqa: E402
from bilm.local_cluster import LocalCluster, free_ports  # noqa: E402
from bilm.waiting import Watch, is_reachable  # noqa: E402
from bilm.training import (load_data, load_options_latest_checkpoint,  # noqa: E402
                           load_vocab, test, train)

SUBJECTS = ["the cat", "a dog", "the café owner", "my friend"]
VERBS = ["sees", "likes", "eats", "finds"]
OBJECTS = ["the fish", "a ball", "some bread", "the bird"]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
TRAIN_ELMO = [sys.executable, str(REPO_ROOT / "bin" / "train_elmo.py")]


def write_sharded_corpus(folder: Path, n_shards: int = 4, n_sentences: int = 20) -> Path:
    """data-<k>.txt shards of generated sentences and vocab.txt in `folder`."""
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(n_shards):
        lines = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} ."
                 for _ in range(n_sentences)]
        (folder / f"data-{shard}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    words = sorted({w for part in SUBJECTS + VERBS + OBJECTS for w in part.split()} | {"."})
    (folder / "vocab.txt").write_text("\n".join(["<S>", "</S>", "<UNK>"] + words) + "\n",
                                      encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_sharded_corpus(tmp_path_factory.mktemp("shards"))


@pytest.fixture(scope="module")
def one_file(tmp_path_factory) -> Path:
    """The common first run: all the training text in one file, data-0.txt."""
    return write_sharded_corpus(tmp_path_factory.mktemp("one_file"), n_shards=1,
                                n_sentences=80)


def script_options(folder: Path) -> Path:
    """--options file of a tiny word-input biLM (sampled softmax: sparse
    gradients for the embedding and the softmax)."""
    options = {"char_cnn": None, "bidirectional": True, "dropout": 0.1,
               "lstm": {"dim": 16, "projection_dim": 8, "n_layers": 2,
                        "use_skip_connections": False},
               "all_clip_norm_val": 1.0, "unroll_steps": 10,
               "n_negative_samples_batch": 16}
    path = folder / "tiny.json"
    path.write_text(json.dumps(options), encoding="utf-8")
    return path


def train_args(corpus: Path, save_dir: Path, n_epochs: int, checkpoint_every: int):
    return ["--save_dir", str(save_dir), "--vocab_file", str(corpus / "vocab.txt"),
            "--train_prefix", str(corpus / "data-*.txt"),
            "--options", str(script_options(save_dir.parent)), "--n_gpus", "1",
            "--batch_size", "2", "--n_epochs", str(n_epochs),
            "--checkpoint_every", str(checkpoint_every)]


def steps_per_epoch(corpus: Path, n_workers: int) -> int:
    return int(count_train_tokens(str(corpus / "data-*.txt")) / (2 * 10 * n_workers))


def latest_step(save_dir: Path) -> int:
    ckpt = tf.train.latest_checkpoint(str(save_dir))
    return int(ckpt.rsplit("-", 1)[1]) if ckpt else -1


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def training_text_perplexity(options: dict, ckpt_file: str, corpus: Path) -> float:
    vocab = load_vocab(str(corpus / "vocab.txt"))
    data = BidirectionalLMDataset(str(corpus / "data-*.txt"), vocab, test=True)
    return test(options, ckpt_file, data, batch_size=1)


def initial_checkpoint(options: dict, folder: Path) -> str:
    """A checkpoint of freshly initialised training variables (global step 0)."""
    with tf.Graph().as_default():
        graph = training._TrainingGraph(training.validate_training_options(options), 1)
        with tf.Session(config=tf.ConfigProto(allow_soft_placement=True)) as sess:
            sess.run(graph.init_op)
            return graph.saver.save(sess, str(folder / "model.ckpt"), global_step=0)


def log_text(cluster: LocalCluster, job: str, index: int) -> str:
    return "".join(cluster.logs.get((job, index), []))


def all_logs(cluster: LocalCluster) -> str:
    return "".join(f"[{job} {index}] {line}" for (job, index), lines in cluster.logs.items()
                   for line in lines[-60:])


def single_process_names(options: dict):
    with tf.Graph().as_default():
        training._TrainingGraph(training.validate_training_options(options), 1)
        return {re.sub(r":0$", "", v.name) for v in tf.global_variables()}


# ---------------------------------------------------------------------------
# Cluster descriptions and shards (no processes)
# ---------------------------------------------------------------------------

def test_cluster_from_flags_and_tf_config():
    from_flags = resolve_cluster("h0:1", "h1:1,h2:1", "worker", 1, environ={})
    assert from_flags == Cluster(("h0:1",), ("h1:1", "h2:1"), "worker", 1)
    assert not from_flags.is_chief and from_flags.n_workers == 2
    tf_config = {"cluster": {"ps": ["h0:1"], "worker": ["h1:1", "h2:1"]},
                 "task": {"type": "worker", "index": 1}}
    assert resolve_cluster(environ={"TF_CONFIG": json.dumps(tf_config)}) == from_flags
    # a chief job is worker 0, the workers follow it
    tf_config = {"cluster": {"ps": ["h0:1"], "chief": ["h1:1"], "worker": ["h2:1"]},
                 "task": {"type": "worker", "index": 0}}
    assert cluster_from_tf_config(json.dumps(tf_config)) == from_flags
    tf_config["task"] = {"type": "chief", "index": 0}
    assert cluster_from_tf_config(json.dumps(tf_config)).is_chief
    assert resolve_cluster(environ={}) is None


@pytest.mark.parametrize("flags, message", [
    (("", "h1:1", "worker", 0), "missing --ps_hosts"),
    (("h0:1", "h1:1", "worker", 1), "task index 1 is out of range"),
    (("h0:1", "h1", "worker", 0), "'h1' in the worker hosts is not host:port"),
    (("h0:1", "h0:1", "worker", 0), "appears twice"),
])
def test_bad_cluster_flags(flags, message):
    with pytest.raises(ClusterError, match=message):
        resolve_cluster(*flags, environ={})


def test_bad_tf_config():
    with pytest.raises(ClusterError, match="not valid JSON"):
        cluster_from_tf_config("{")
    with pytest.raises(ClusterError, match="job.*evaluator"):
        cluster_from_tf_config(json.dumps({"cluster": {"ps": ["a:1"], "evaluator": ["b:1"]},
                                           "task": {"type": "ps", "index": 0}}))


def test_each_worker_reads_its_own_files_or_every_nth_line(corpus, one_file):
    shards = sorted(str(p) for p in corpus.glob("data-*.txt"))
    workers = [Cluster(("h:0",), ("h:1", "h:2", "h:3"), "worker", k) for k in range(3)]
    shares = [worker_shards(str(corpus / "data-*.txt"), w) for w in workers]
    # at least as many files as workers: whole files, dealt out
    assert shares == [DataShare(tuple(shards[k::3])) for k in range(3)]
    # fewer files than workers: every file, every 5th line from the task index
    five = Cluster(("h:0",), tuple(f"h:{k}" for k in range(1, 6)), "worker", 4)
    assert worker_shards(str(corpus / "data-*.txt"), five) == DataShare(tuple(shards),
                                                                        (4, 5))
    assert worker_shards(str(corpus / "data-*.txt"), None) == DataShare(tuple(shards))

    # one file, two workers: disjoint halves of its lines, together all of them
    vocab = load_vocab(str(one_file / "vocab.txt"))
    lines = (one_file / "data-0.txt").read_text(encoding="utf-8").splitlines()
    for index in range(2):
        data = LMDataset(str(one_file / "data-0.txt"), vocab, test=True, shard=(index, 2))
        seen = [vocab.decode(ids[1:-1]) for ids, _ in data.get_sentence()]
        assert seen == lines[index::2]

    # the dataset of worker 1 of 2 only ever loads its own files
    options = {"bidirectional": True}
    _, data = load_data(options, str(corpus / "vocab.txt"), str(corpus / "data-*.txt"),
                        cluster=Cluster(("h:0",), ("h:1", "h:2"), "worker", 1))
    loaded = []
    for part in (data._data_forward, data._data_reverse):
        part._load_shard = lambda name, load=part._load_shard: loaded.append(name) or \
            load(name)
    for _ in zip(range(30), data.iter_batches(2, 10)):  # several passes over the shards
        pass
    assert len(loaded) > 4 and set(loaded) == set(shards[1::2])


def test_line_shard_errors(tmp_path, one_file):
    vocab = load_vocab(str(one_file / "vocab.txt"))
    for bad in [(2, 2), (-1, 2), (0, 0), (0.5, 2), "0,2"]:
        with pytest.raises(ValueError, match=r"shard .*\(index, count\)"):
            LMDataset(str(one_file / "data-0.txt"), vocab, shard=bad)
    (tmp_path / "short.txt").write_text("the cat sees a dog .\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"short\.txt has 1 line\(s\) but line shard 1 "
                       r"of 2 .* gets no tokens"):
        LMDataset(str(tmp_path / "short.txt"), vocab, shard=(1, 2))


def test_wait_flags():
    args = argparse.ArgumentParser()
    add_cluster_arguments(args)
    parsed = args.parse_args(["--ps_hosts", "h:0", "--worker_hosts", "h:1,h:2",
                              "--job_name", "worker", "--worker_timeout", "90",
                              "--wait_log_every", "5"])
    cluster = cluster_from_args(parsed)
    assert (cluster.worker_timeout, cluster.wait_log_every) == (90.0, 5.0)
    assert cluster_from_args(args.parse_args(["--ps_hosts", "h:0", "--worker_hosts", "h:1",
                                              "--job_name", "ps"])).worker_timeout is None
    with pytest.raises(ClusterError, match="--worker_timeout must be a positive number"):
        resolve_cluster("h:0", "h:1", "worker", worker_timeout=0, environ={})


def test_watch_logs_while_waiting_and_is_reachable_tells_a_live_server(caplog):
    import socket
    server = socket.socket()
    server.bind(("localhost", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        assert is_reachable(f"localhost:{port}")
    finally:
        server.close()
    assert not is_reachable(f"localhost:{port}")
    assert not is_reachable(f"localhost:{free_ports(1)[0]}")

    watch = Watch("worker 3", every=0.2)
    with caplog.at_level(logging.WARNING, logger="bilm.waiting"):
        with watch.waiting(lambda: "the chief's update (somewhere)"):
            time.sleep(0.9)
        time.sleep(0.5)  # nothing more once the wait is over
    lines = [r.getMessage() for r in caplog.records if r.name == "bilm.waiting"]
    assert 2 <= len(lines) <= 5, lines
    assert all(re.fullmatch(r"worker 3: waiting \d+ s for the chief's update \(somewhere\)",
                            line) for line in lines), lines


# ---------------------------------------------------------------------------
# 1 ps + 2 workers on one file: a run, how it ends, what its checkpoint
# restores into
# ---------------------------------------------------------------------------

def run_launcher(args, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """bin/launch_local_cluster.py with `args`, its tasks in its own process
    group, all of which is killed if it outlives `timeout`."""
    command = [sys.executable, str(REPO_ROOT / "bin" / "launch_local_cluster.py"), *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=ENV, cwd=cwd, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_one_file_two_workers_train_to_the_end_and_every_task_exits(one_file, tmp_path):
    """The issue's first run: --train_prefix ONE_FILE, 1 ps + 2 workers."""
    save_dir = tmp_path / "save"
    n_steps = 25 * steps_per_epoch(one_file, 2)
    result = run_launcher(["--n_ps", "1", "--n_workers", "2", "--timeout", "100", "--",
                           *train_args(one_file, save_dir, n_epochs=25,
                                       checkpoint_every=50)],
                          cwd=tmp_path, timeout=150)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    log = result.stdout
    assert f"chief: training from global step 0 to {n_steps}" in log
    # both workers read the one file, each every other line
    for index in range(2):
        assert re.search(rf"\[worker {index}\] .*data split by line \(1 file\(s\) < 2 "
                         rf"workers\): worker {index} reads lines {index}, {index + 2}, "
                         rf"{index + 4}, \.\.\. of every file: .*data-0\.txt", log)
    # the run ended by itself: worker 1 recorded that it finished, the chief
    # then ended the ps task, which exited 0 without being told by the launcher
    assert "[worker 0] " in log and "chief: every worker finished" in log
    assert "[ps 0] " in log and "ps 0: the chief ended the run; exiting" in log
    assert "every task ended on its own with exit status 0" in result.stderr

    options, ckpt_file = load_options_latest_checkpoint(str(save_dir))
    assert ckpt_file.endswith(f"model.ckpt-{n_steps}")
    # the variables of single-process training, nothing of the synchronisation
    assert {name for name, _ in tf.train.list_variables(ckpt_file)} == \
        single_process_names(options)
    assert not [name for name in os.listdir(save_dir) if "tmp" in name]

    # the loss fell: perplexity on the training text, before and after
    before = training_text_perplexity(options, initial_checkpoint(options, tmp_path),
                                      one_file)
    after = training_text_perplexity(options, ckpt_file, one_file)
    print(f"perplexity on the training text: initial {before:.2f}, trained {after:.2f}")
    assert after < 20.0 and after < 0.7 * before

    # restart in one process (2 towers) and dump_weights from the cluster's checkpoint
    vocab = load_vocab(str(one_file / "vocab.txt"))
    data = BidirectionalLMDataset(str(one_file / "data-*.txt"), vocab, shuffle_on_load=True)
    restarted = train(dict(options, n_epochs=1), data, 2, str(save_dir), str(save_dir),
                      restart_ckpt_file=ckpt_file)
    assert latest_step(save_dir) == n_steps + steps_per_epoch(one_file, 2)
    assert restarted == tf.train.latest_checkpoint(str(save_dir))
    training.dump_weights(str(save_dir), str(tmp_path / "weights.hdf5"))


# ---------------------------------------------------------------------------
# One synchronous step of 2 workers == one step of their towers in one process;
# a worker whose data runs out sends empty gradients
# ---------------------------------------------------------------------------

class FixedBatches:
    """A dataset that yields the given batches once."""

    def __init__(self, batches):
        self.batches = batches

    def iter_batches(self, batch_size, num_steps):
        for batch in self.batches:
            assert batch["token_ids"].shape == (batch_size, num_steps)
            yield dict(batch, tokens_characters=None, tokens_characters_reverse=None)


STEP_KEYS = ("token_ids", "next_token_id", "token_ids_reverse", "next_token_id_reverse")


def run_step_task(argv) -> None:
    """One task of the step-equality cluster (the __main__ of this file):
    worker k trains on the batches w<k>_<j>_<key> of STEP_DIR/batches.npz."""
    parser = argparse.ArgumentParser()
    parser.add_argument("step_dir")
    add_cluster_arguments(parser)
    args = parser.parse_args(argv)
    cluster = cluster_from_args(args)
    if cluster.job_name == "ps":
        run_parameter_server(cluster)
        return
    step_dir = Path(args.step_dir)
    options = json.loads((step_dir / "options.json").read_text())
    n_gpus = json.loads((step_dir / "towers.json").read_text())
    plan = np.load(step_dir / "batches.npz")
    prefix = f"w{cluster.task_index}_"
    numbers = sorted({int(name.split("_")[1]) for name in plan.files
                      if name.startswith(prefix)})
    batches = [{key: plan[f"{prefix}{j}_{key}"] for key in STEP_KEYS} for j in numbers]
    train(options, FixedBatches(batches), n_gpus, str(step_dir / "cluster"),
          str(step_dir / "cluster"),
          restart_ckpt_file=str(step_dir / "init" / "model.ckpt-0"), cluster=cluster)


def save_plan(path: Path, batches_per_worker) -> None:
    np.savez(path, **{f"w{k}_{j}_{key}": batch[key]
                      for k, batches in enumerate(batches_per_worker)
                      for j, batch in enumerate(batches) for key in STEP_KEYS})


def rows(batch: dict, start: int, stop: int) -> dict:
    return {key: batch[key][start:stop] for key in STEP_KEYS}


@pytest.mark.parametrize("n_ps, towers_per_worker, data_runs_out",
                         [(2, 2, False), (1, 1, True)])
def test_one_synchronous_step_equals_towers_in_one_process(corpus, tmp_path, n_ps,
                                                           towers_per_worker,
                                                           data_runs_out):
    """2 workers of k towers make the update of one process with 2k towers.

    data_runs_out: worker 1 has one batch, the chief two. Worker 1's batch is
    the chief's first, so the first update (the average of two equal
    gradients) and the second (the chief's gradient alone: worker 1 sends
    empty ones) are those of one tower training on the chief's batches. (The
    other case averages different gradients, on 2 ps tasks.)"""
    vocab = load_vocab(str(corpus / "vocab.txt"))
    batch_size, unroll_steps, n_towers = 3, 5, 2 * towers_per_worker
    n_steps = 2 if data_runs_out else 1
    options = {"n_tokens_vocab": vocab.size, "batch_size": batch_size,
               "unroll_steps": unroll_steps, "n_epochs": 1,
               "n_train_tokens": n_steps * n_towers * batch_size * unroll_steps,
               "all_clip_norm_val": 1.0, "dropout": 0.0, "sample_softmax": False,
               "lstm": {"dim": 16, "projection_dim": 8, "n_layers": 2},
               "bidirectional": True}
    (tmp_path / "options.json").write_text(json.dumps(options))
    (tmp_path / "towers.json").write_text(json.dumps(towers_per_worker))
    data = BidirectionalLMDataset(str(corpus / "data-*.txt"), vocab, test=True)
    batches = list(zip(range(n_steps), data.iter_batches(n_towers * batch_size,
                                                          unroll_steps)))
    (tmp_path / "init").mkdir()
    init_ckpt = initial_checkpoint(options, tmp_path / "init")
    if data_runs_out:
        first, second = (rows(batch, 0, batch_size) for _, batch in batches)
        save_plan(tmp_path / "batches.npz", [[first, second], [first]])
        single = train(dict(options, n_train_tokens=n_steps * batch_size * unroll_steps),
                       FixedBatches([first, second]), 1, str(tmp_path / "single"),
                       str(tmp_path / "single"), restart_ckpt_file=init_ckpt)
    else:
        batch, rows_per_worker = batches[0][1], towers_per_worker * batch_size
        save_plan(tmp_path / "batches.npz",
                  [[rows(batch, k * rows_per_worker, (k + 1) * rows_per_worker)]
                   for k in range(2)])
        single = train(options, FixedBatches([rows(batch, 0, n_towers * batch_size)]),
                       n_towers, str(tmp_path / "single"), str(tmp_path / "single"),
                       restart_ckpt_file=init_ckpt)

    command = [sys.executable, __file__, str(tmp_path)]
    with LocalCluster(command, n_ps=n_ps, n_workers=2, env=ENV, echo=None) as cluster:
        cluster.start_all()
        codes = cluster.wait_for_workers(timeout=90)
        assert codes == {0: 0, 1: 0}, all_logs(cluster)
        assert cluster.wait_for_ps(timeout=30) == {k: 0 for k in range(n_ps)}, \
            all_logs(cluster)
    if data_runs_out:
        assert "worker 1: the data ran out at global step 1; sending empty gradients" \
            in log_text(cluster, "worker", 1)

    cluster_ckpt = tf.train.latest_checkpoint(str(tmp_path / "cluster"))
    assert single.endswith(f"model.ckpt-{n_steps}")
    assert cluster_ckpt.endswith(f"model.ckpt-{n_steps}")
    single_reader = tf.train.load_checkpoint(single)
    cluster_reader = tf.train.load_checkpoint(cluster_ckpt)
    init_reader = tf.train.load_checkpoint(init_ckpt)
    names = set(single_reader.get_variable_to_shape_map())
    assert names == set(cluster_reader.get_variable_to_shape_map())
    error, moved = 0.0, 0.0
    for name in names - {"global_step"}:
        value = single_reader.get_tensor(name)
        error = max(error, float(np.max(np.abs(value - cluster_reader.get_tensor(name)))))
        moved = max(moved, float(np.max(np.abs(value - init_reader.get_tensor(name)))))
    assert single_reader.get_tensor("global_step") == \
        cluster_reader.get_tensor("global_step") == n_steps
    what = ("2 steps, worker 1 out of data after one, vs 1 tower" if data_runs_out else
            f"one step, {n_ps} ps + 2 workers x {towers_per_worker} tower(s) vs "
            f"{n_towers} towers")
    print(f"{what}: max abs difference {error:.3g} (largest change of a variable "
          f"{moved:.3g})")
    assert moved > 1e-3  # the steps did something
    assert error < 1e-5
    # the embedding's sparse rows moved by the same amount
    np.testing.assert_allclose(single_reader.get_tensor("lm/embedding"),
                               cluster_reader.get_tensor("lm/embedding"), atol=1e-5)


# ---------------------------------------------------------------------------
# Faults: kill and restart a worker, the chief, a ps task
# ---------------------------------------------------------------------------

def test_a_restarted_worker_rejoins(corpus, tmp_path):
    save_dir = tmp_path / "save"
    n_steps = 10 * steps_per_epoch(corpus, 2)
    with LocalCluster(TRAIN_ELMO + train_args(corpus, save_dir, 10, 10), 1, 2, env=ENV,
                      echo=None) as cluster:
        cluster.start_all()
        wait_until(lambda: latest_step(save_dir) >= 20, 60, "checkpoint 20")
        cluster.kill("worker", 1)
        stalled_at = latest_step(save_dir)
        time.sleep(1.5)
        # synchronous: without worker 1 the chief makes at most the step in flight
        assert latest_step(save_dir) <= stalled_at + 10
        cluster.start("worker", 1)
        codes = cluster.wait_for_workers(timeout=60)
        chief_log, worker_log = (log_text(cluster, "worker", 0),
                                 log_text(cluster, "worker", 1))
        assert codes == {0: 0, 1: 0}, chief_log[-3000:] + worker_log[-3000:]
    rejoined = [int(step) for step in re.findall(r"joining at global step (\d+)", worker_log)]
    assert len(rejoined) == 2 and rejoined[0] == 0 and rejoined[1] >= 20
    assert "Restoring parameters" not in chief_log  # the chief kept going: nothing lost
    assert latest_step(save_dir) == n_steps
    print(f"worker 1 killed after checkpoint {stalled_at}, rejoined at global step "
          f"{rejoined[1]}; run finished at {n_steps}")


def test_a_restarted_chief_or_ps_resumes_from_the_last_checkpoint(corpus, tmp_path):
    save_dir = tmp_path / "save"
    n_steps = 12 * steps_per_epoch(corpus, 2)
    command = TRAIN_ELMO + train_args(corpus, save_dir, 12, 10) + ["--wait_log_every", "2"]
    with LocalCluster(command, 1, 2, env=ENV, echo=None) as cluster:
        cluster.start_all()
        restored = []
        for task in (("worker", 0), ("ps", 0)):
            wait_until(lambda: latest_step(save_dir) >= 20 + 40 * len(restored), 60,
                       f"checkpoint {20 + 40 * len(restored)}")
            cluster.kill(*task)
            restored.append(latest_step(save_dir))
            if task == ("worker", 0):
                # gone for more than two of worker 1's 2 s wait logs, however
                # fast a restarted process would start its server again
                time.sleep(5)
            cluster.start(*task)
        codes = cluster.wait_for_workers(timeout=90)
        chief_log = log_text(cluster, "worker", 0)
        assert codes == {0: 0, 1: 0}, chief_log[-3000:] + \
            log_text(cluster, "worker", 1)[-3000:]
    for step in restored:
        assert f"Restoring parameters from {save_dir}/model.ckpt-{step}" in chief_log
    assert f"chief: training from global step {restored[0]} to {n_steps}" in chief_log
    assert "An error was raised. This may be due to a preemption" in chief_log
    assert chief_log.count("the ps tasks kept the variables of a chief that ended") == 1
    # while the chief was gone, worker 1 said whom it waited for
    assert re.search(r"worker 1: waiting \d+ s for the chief's update of global step \d+ "
                     rf"\(chief at {cluster.worker_hosts[0]}: server does not answer",
                     log_text(cluster, "worker", 1))
    state = tf.train.get_checkpoint_state(str(save_dir))
    assert state.model_checkpoint_path.endswith(f"model.ckpt-{n_steps}")
    assert len(state.all_model_checkpoint_paths) <= training.MAX_CHECKPOINTS_TO_KEEP
    for path in state.all_model_checkpoint_paths:
        assert tf.train.checkpoint_exists(path)
    options, ckpt_file = load_options_latest_checkpoint(str(save_dir))
    assert int(tf.train.load_checkpoint(ckpt_file).get_tensor("global_step")) == n_steps
    assert np.isfinite(training_text_perplexity(options, ckpt_file, corpus))
    print(f"chief killed after checkpoint {restored[0]}, ps after {restored[1]}: "
          f"both resumed from those checkpoints; run finished at {n_steps}")


# ---------------------------------------------------------------------------
# Waiting visibly: a worker that never comes, --worker_timeout
# ---------------------------------------------------------------------------

def test_a_worker_that_fails_at_start_up_is_named_by_the_chief(one_file, tmp_path):
    """...and Ctrl-C stops the waiting chief, which ends the ps task too."""
    save_dir = tmp_path / "save"
    args = train_args(one_file, save_dir, n_epochs=2, checkpoint_every=1000)
    command = TRAIN_ELMO + args + ["--wait_log_every", "2"]
    with LocalCluster(command, 1, 2, env=ENV, echo=None) as cluster:
        cluster.start("ps", 0)
        chief = cluster.start("worker", 0)
        # worker 1 stops before it starts its server
        broken = cluster.start("worker", 1, command=TRAIN_ELMO + [
            *args[:2], "--vocab_file", str(tmp_path / "no_such_vocab.txt"), *args[4:]])
        worker_1 = cluster.worker_hosts[1]
        started = time.monotonic()
        wait_until(lambda: f"worker 1 ({worker_1}: no gradients yet; its server does not "
                   "answer: not started yet, or ended)" in log_text(cluster, "worker", 0),
                   60, "the chief to name worker 1")
        named_after = time.monotonic() - started
        assert broken.poll() not in (None, 0)
        assert "no_such_vocab.txt" in log_text(cluster, "worker", 1)
        assert re.search(r"chief: waiting \d+ s for the gradients of global step 0 from "
                         rf"worker 1 \({worker_1}", log_text(cluster, "worker", 0))
        assert chief.poll() is None  # it waits, as it should

        chief.send_signal(signal.SIGINT)
        chief.wait(timeout=30)
        assert cluster.wait_for_ps(timeout=30) == {0: 0}, all_logs(cluster)
    chief_log = log_text(cluster, "worker", 0)
    assert chief.returncode != 0
    for line in ["chief: interrupted while waiting; stopping",
                 "interrupted at global step 0; the last checkpoint is",
                 f"chief: every worker finished but worker 1 ({worker_1})",
                 "chief: sent ps 0"]:
        assert line in chief_log, chief_log[-3000:]
    print(f"the chief named worker 1 {named_after:.0f} s after the cluster started")


def test_worker_timeout_stops_the_chief_and_keeps_its_last_checkpoint(one_file, tmp_path):
    save_dir = tmp_path / "save"
    timeout = 8
    command = TRAIN_ELMO + train_args(one_file, save_dir, 500, 10) + [
        "--worker_timeout", str(timeout), "--wait_log_every", "1"]
    with LocalCluster(command, 1, 2, env=ENV, echo=None) as cluster:
        # worker 1 first, so that it is ready before the chief's first step
        cluster.start("ps", 0)
        cluster.start("worker", 1)
        wait_until(lambda: "starting the server" in log_text(cluster, "worker", 1), 60,
                   "worker 1's server")
        cluster.start("worker", 0)
        wait_until(lambda: latest_step(save_dir) >= 20, 60, "checkpoint 20")
        cluster.kill("worker", 1)
        killed = time.monotonic()
        chief = cluster.processes[("worker", 0)]
        chief.wait(timeout=60)
        stopped_after = time.monotonic() - killed
        chief_log = log_text(cluster, "worker", 0)
        assert chief.returncode == EXIT_WORKER_TIMEOUT, chief_log[-3000:]
        # the ps task ends on its own: the chief sent it the end of the run
        assert cluster.wait_for_ps(timeout=30) == {0: 0}, all_logs(cluster)
    worker_1 = cluster.worker_hosts[1]
    # while it waited, the chief named the worker that was gone
    assert re.search(rf"chief: waiting \d+ s for the gradients of global step \d+ from "
                     rf"worker 1 \({worker_1}: last gradients for global step \d+; its "
                     r"server does not answer", chief_log)
    error = re.search(rf"ERROR train_elmo: chief: waited --worker_timeout {timeout} s for "
                      r"the gradients of global step (\d+) from worker 1 .*its last "
                      r"checkpoint is (\S+): run the same commands again", chief_log)
    assert error, chief_log[-3000:]
    # the last checkpoint is intact and is the latest one
    last = tf.train.latest_checkpoint(str(save_dir))
    assert error.group(2) == last and latest_step(save_dir) >= 20
    options, ckpt_file = load_options_latest_checkpoint(str(save_dir))
    assert ckpt_file == last
    for path in tf.train.get_checkpoint_state(str(save_dir)).all_model_checkpoint_paths:
        assert tf.train.checkpoint_exists(path)
    assert np.isfinite(training_text_perplexity(options, ckpt_file, one_file))
    assert timeout - 1 <= stopped_after < timeout + 30
    print(f"worker 1 killed at global step ~{error.group(1)}: the chief stopped "
          f"{stopped_after:.1f} s later (--worker_timeout {timeout}) with exit status "
          f"{EXIT_WORKER_TIMEOUT}; last checkpoint {os.path.basename(last)}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_step_task(sys.argv[1:])
