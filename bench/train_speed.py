"""Training speed: s/batch, tokens/s, fraction of the ceiling, peak memory.

    python bench/train_speed.py [--configs mid,standard] [--batches 20] [--warmup 3]
    BILM_ORIGINAL_DIR=/tmp/original python bench/train_speed.py   # + the original

In one run it (a) writes a generated corpus (Zipf-distributed words from a
50k vocabulary, so a batch repeats tokens about as real text does) and its
vocabulary, (b) measures this machine's float32 2048^3 matrix product rate,
(c) trains each config for `--warmup` + `--batches` batches, each library in a
fresh subprocess (so peak memory is its own), carrying the LSTM states from
batch to batch as `train` does, and (d) prints s/batch (median of the timed
batches, graph build excluded), tokens/s, the fraction of the ceiling
(tokens/s x nominal FLOP/token / measured FLOP/s), peak resident memory and a
per-stage breakdown of one traced step (op time summed over threads).

Nominal FLOPs (2 per multiply-add, forward x 3 for forward + backward) count
the char CNN and highway once per token, the LSTMs and the sampled softmax per
direction, as the original does them; work skipped by computing a token's
embedding once per batch counts as speed.

With BILM_ORIGINAL_DIR set to the peer built by shared/peers/setup_original.sh
the original TF1 library is timed on the same data in the same run (its
venv's python, TF_USE_LEGACY_KERAS=1) and the ratio is printed.
Nothing here is a test.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402

from matmul_rate import matmul_flops  # noqa: E402

FILTERS = [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]]
VOCAB_SIZE = 50000


def training_options(lstm_dim: int, projection_dim: int, batch_size: int,
                     n_negative_samples: int, n_highway: int = 2) -> dict:
    """Options of bin/train_elmo.py (bidirectional char model, skip connections)."""
    return {
        "bidirectional": True,
        "char_cnn": {"activation": "relu", "embedding": {"dim": 16}, "filters": FILTERS,
                     "max_characters_per_token": 50, "n_characters": 261,
                     "n_highway": n_highway},
        "dropout": 0.1,
        "lstm": {"cell_clip": 3, "dim": lstm_dim, "n_layers": 2, "proj_clip": 3,
                 "projection_dim": projection_dim, "use_skip_connections": True},
        "all_clip_norm_val": 10.0,
        "n_epochs": 1, "n_train_tokens": 10 ** 9,
        "batch_size": batch_size, "n_tokens_vocab": VOCAB_SIZE + 3,
        "unroll_steps": 20, "n_negative_samples_batch": n_negative_samples,
    }


CONFIGS = {
    "mid": training_options(1024, 256, 32, 4096),
    "standard": training_options(4096, 512, 128, 8192),
    # small enough to try the script in a minute
    "tiny": training_options(256, 64, 16, 512, n_highway=1),
}


def forward_macs_per_token(options: dict) -> dict:
    """Multiply-adds of the forward pass per token, by stage."""
    cnn, lstm = options["char_cnn"], options["lstm"]
    char_dim, max_chars = cnn["embedding"]["dim"], cnn["max_characters_per_token"]
    n_filters = sum(count for _, count in cnn["filters"])
    proj, dim = lstm["projection_dim"], lstm["dim"]
    n_directions = 2 if options.get("bidirectional") else 1
    return {
        "char CNN": sum(width * char_dim * count * (max_chars - width + 1)
                        for width, count in cnn["filters"]),
        "highway": cnn["n_highway"] * 2 * n_filters * n_filters,
        "projection": n_filters * proj if n_filters != proj else 0,
        "LSTMs": n_directions * lstm["n_layers"] * ((proj + proj) * 4 * dim + dim * proj),
        "softmax": n_directions * options["n_negative_samples_batch"] * proj,
    }


def flop_per_token(options: dict) -> float:
    """Nominal FLOPs of one training token, forward + backward (= 3 x forward)."""
    return 3 * 2.0 * sum(forward_macs_per_token(options).values())


def write_corpus(workdir: str, n_tokens: int, seed: int = 0, zipf: float = 1.1) -> dict:
    """A vocabulary of VOCAB_SIZE word-like strings and a text of Zipf-distributed
    words, 5-40 per line (zipf 1.1: 640 tokens hold ~50% distinct ones, as
    WordNet glosses do). Word lengths are 1 + Poisson(6), capped at 20: the
    longest word of a 1,280-token batch is then ~15 characters, as in the
    dictionary corpora (the char CNN skips positions past the longest word)."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlucmfwypvbgkjqxz"))
    words, seen = [], set()
    while len(words) < VOCAB_SIZE:
        word = "".join(rng.choice(letters, size=min(20, 1 + rng.poisson(6))))
        if word not in seen:
            seen.add(word)
            words.append(word)
    vocab_file = os.path.join(workdir, "vocab.txt")
    with open(vocab_file, "w", encoding="utf-8") as fout:
        fout.write("<S>\n</S>\n<UNK>\n" + "\n".join(words) + "\n")
    probabilities = 1.0 / np.arange(1, VOCAB_SIZE + 1) ** zipf
    probabilities /= probabilities.sum()
    ids = rng.choice(VOCAB_SIZE, size=n_tokens, p=probabilities)
    train_file = os.path.join(workdir, "train.txt")
    with open(train_file, "w", encoding="utf-8") as fout:
        start = 0
        while start < n_tokens:
            length = int(rng.integers(5, 41))
            fout.write(" ".join(words[i] for i in ids[start:start + length]) + "\n")
            start += length
    return {"vocab": vocab_file, "train": train_file}


# ---------------------------------------------------------------------------
# One library, one config, in its own process
# ---------------------------------------------------------------------------

STAGES = (  # (stage, substrings of an op's name), first match wins
    ("optimizer", ("Adagrad", "clip_by_global_norm", "global_norm", "average_gradients")),
    ("softmax", ("softmax", "log_uniform", "Log_Uniform")),
    ("LSTMs", ("RNN_", "/rnn/", "lstm", "dropout")),
    ("char CNN", ("char_embed", "char_cnn", "distinct_tokens", "embedding_lookup", "Conv2D",
                  "MaxPool", "CNN/")),
    # the original builds its highway and projection ops without a name scope
    ("highway + projection", ("CNN_high", "highway", "CNN_proj", "token_projection", "lm/")),
)


def _stage(node_name: str) -> str:
    direction = "backward" if "gradients/" in node_name else "forward"
    for stage, needles in STAGES:
        if any(needle in node_name for needle in needles):
            if stage == "optimizer":
                return stage
            return f"{stage} {direction}"
    return "other " + direction


def _build_original_step(bilm_training, options: dict):
    """The original's train() graph (one tower), as in bilm-tf's training.py."""
    import tensorflow.compat.v1 as tf
    with tf.device("/cpu:0"):
        global_step = tf.get_variable("global_step", [], initializer=tf.constant_initializer(0),
                                      trainable=False)
        opt = tf.train.AdagradOptimizer(learning_rate=0.2, initial_accumulator_value=1.0)
        with tf.device("/gpu:0"), tf.variable_scope("lm"):
            model = bilm_training.LanguageModel(options, True)
            grads = opt.compute_gradients(
                model.total_loss * options["unroll_steps"],
                aggregation_method=tf.AggregationMethod.EXPERIMENTAL_TREE)
        grads = bilm_training.average_gradients([grads], options["batch_size"], options)
        grads, _ = bilm_training.clip_grads(grads, options, False, global_step)
        train_op = opt.apply_gradients(grads, global_step=global_step)
        init = tf.global_variables_initializer()
    init_states = [t for states in model.init_lstm_state for state in states for t in state]
    final_states = [t for states in model.final_lstm_state for state in states for t in state]

    def feed(batch, state_values):
        feed_dict = dict(zip(init_states, state_values))
        feed_dict[model.tokens_characters] = batch["tokens_characters"]
        feed_dict[model.tokens_characters_reverse] = batch["tokens_characters_reverse"]
        feed_dict[model.next_token_id] = batch["next_token_id"]
        feed_dict[model.next_token_id_reverse] = batch["next_token_id_reverse"]
        return feed_dict
    return init, train_op, model.total_loss, init_states, final_states, feed


def _build_our_step(bilm_training, options: dict):
    graph = bilm_training._TrainingGraph(options, 1)

    def feed(batch, state_values):
        return graph.batch_feed(batch, state_values, options["batch_size"])
    return (graph.init_op, graph.train_op, graph.train_perplexity,
            graph.init_state_tensors, graph.final_state_tensors, feed)


def _turn_off_lever(lever: str) -> None:
    """Rebuild our graph without one speed lever (for --levers), by swapping
    the function `lm_graph` calls for the plain way of computing the same."""
    from bilm import layers, lm_graph
    if lever == "distinct":    # char CNN, highway, projection on every token
        lm_graph.distinct_token_embeddings = lambda ids, weights, cnn_options: [
            layers.char_cnn(x, weights, cnn_options) for x in ids]
    elif lever == "prefix":    # convolutions over all C character positions
        layers.position_bounds = lambda max_chars, max_width: [max_chars]
    elif lever == "unrolled":  # the LSTM in a tf.while_loop (the previous graph)
        lm_graph.run_lstm_fixed_steps = (
            lambda inputs, weights, state, cell_clip, proj_clip, residual: layers.run_lstm(
                inputs, weights, state, None, cell_clip, proj_clip, residual))
    elif lever == "lstm_gradient":  # unrolled, with TensorFlow's own gradient
        def unrolled_autodiff(inputs, weights, state, cell_clip, proj_clip, residual):
            import tensorflow.compat.v1 as tf
            input_dim = int(inputs.shape[-1])
            input_kernel, recurrent_kernel = tf.split(
                weights.kernel, [input_dim, int(weights.kernel.shape[0]) - input_dim])
            n_steps, batch_size = int(inputs.shape[1]), tf.shape(inputs)[0]
            gates = tf.matmul(tf.reshape(tf.transpose(inputs, [1, 0, 2]), [-1, input_dim]),
                              input_kernel) + weights.bias
            c, h = state
            outputs = []
            for step_gates in tf.unstack(tf.reshape(gates, [n_steps, batch_size, -1])):
                c, h = layers.lstm_cell_update(step_gates, c, h, recurrent_kernel,
                                               weights.projection, cell_clip, proj_clip)
                outputs.append(h)
            output = tf.transpose(tf.stack(outputs), [1, 0, 2])
            return (output + inputs if residual else output), (c, h)
        lm_graph.run_lstm_fixed_steps = unrolled_autodiff
    elif lever == "transposed_copies":  # backward products with a transpose flag
        import tensorflow.compat.v1 as tf
        layers._transposed_copy = tf.transpose   # grappler folds it into the flag
    else:
        raise SystemExit(f"unknown lever {lever!r}; choose from {LEVERS}")


LEVERS = ("distinct", "prefix", "unrolled", "lstm_gradient", "transposed_copies")


def run_worker(library: str, config: str, files: dict, n_batches: int, n_warmup: int,
               trace: bool) -> dict:
    import tensorflow.compat.v1 as tf
    if library == "original":
        tf.disable_v2_behavior()
    elif library.startswith("bilm-no-"):
        _turn_off_lever(library[len("bilm-no-"):])
    from bilm import training as bilm_training
    from bilm.data import BidirectionalLMDataset, UnicodeCharsVocabulary

    options = CONFIGS[config]
    vocab = UnicodeCharsVocabulary(files["vocab"], 50)
    data = BidirectionalLMDataset(files["train"], vocab, test=False, shuffle_on_load=True)
    build = _build_original_step if library == "original" else _build_our_step
    start = time.perf_counter()
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        init, train_op, loss, init_states, final_states, feed = build(bilm_training, options)
        build_seconds = time.perf_counter() - start
        batches = data.iter_batches(options["batch_size"], options["unroll_steps"])
        step_seconds, feed_seconds, distinct = [], [], []
        breakdown = {}
        session_config = tf.ConfigProto(allow_soft_placement=True)
        if os.environ.get("BILM_BENCH_THREADS"):  # "intra,inter", e.g. "1,2"
            intra, inter = map(int, os.environ["BILM_BENCH_THREADS"].split(","))
            session_config.intra_op_parallelism_threads = intra
            session_config.inter_op_parallelism_threads = inter
        with tf.Session(config=session_config) as sess:
            sess.run(init)
            state_values = [np.zeros(t.shape.as_list(), np.float32) for t in init_states]
            for batch_no in range(n_warmup + n_batches + (1 if trace else 0)):
                feed_start = time.perf_counter()
                batch = next(batches)
                feed_dict = feed(batch, state_values)
                run_start = time.perf_counter()
                if trace and batch_no == n_warmup + n_batches:
                    metadata = tf.RunMetadata()
                    _, _, state_values = sess.run(
                        [train_op, loss, final_states], feed_dict,
                        options=tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE),
                        run_metadata=metadata)
                    breakdown = _op_time_by_stage(metadata)
                    continue
                _, _, state_values = sess.run([train_op, loss, final_states], feed_dict)
                end = time.perf_counter()
                if batch_no >= n_warmup:
                    step_seconds.append(end - feed_start)
                    feed_seconds.append(run_start - feed_start)
                    chars = np.concatenate([batch["tokens_characters"],
                                            batch["tokens_characters_reverse"]])
                    chars = chars.reshape(-1, chars.shape[-1])
                    distinct.append(len(np.unique(chars, axis=0)) / len(chars))
    return {"library": library, "config": config, "build_seconds": build_seconds,
            "step_seconds": step_seconds, "feed_seconds": feed_seconds,
            "distinct_share": float(np.mean(distinct)),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "breakdown": breakdown}


def _op_time_by_stage(metadata) -> dict:
    totals = {}
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            if node.node_name in ("_SOURCE", "_SINK"):
                continue
            stage = _stage(node.node_name)
            totals[stage] = totals.get(stage, 0.0) + node.all_end_rel_micros / 1e6
            if stage.startswith("other") and os.environ.get("BILM_BENCH_SHOW_OTHER"):
                print(node.node_name, node.all_end_rel_micros, file=sys.stderr)
    return totals


# ---------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------

def _worker_command(library: str, original_dir: str) -> tuple:
    env = dict(os.environ)
    if library == "original":
        env["TF_USE_LEGACY_KERAS"] = "1"
        env["PYTHONPATH"] = os.path.join(original_dir, "src")
        return [os.path.join(original_dir, "venv", "bin", "python")], env
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return [sys.executable], env


def _run_in_subprocess(library: str, config: str, files: dict, args) -> dict:
    python, env = _worker_command(library, args.original_dir)
    command = python + [os.path.abspath(__file__), "--worker", library, "--configs", config,
                        "--files", json.dumps(files), "--batches", str(args.batches),
                        "--warmup", str(args.warmup)] + (["--trace"] if args.trace else [])
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{library} {config} failed (exit {result.returncode})")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _print_result(result: dict, flops: float, per_token: float, tokens_per_batch: int) -> float:
    seconds = float(np.median(result["step_seconds"]))
    rate = tokens_per_batch / seconds
    print(f"{result['library']:<22} {result['config']:<9} {seconds:>8.3f} "
          f"{float(np.median(result['feed_seconds'])) * 1e3:>7.1f} {rate:>9.1f} "
          f"{rate * per_token / flops:>7.2f} {result['peak_rss_bytes'] / 2 ** 30:>8.2f} "
          f"{result['build_seconds']:>7.1f} {result['distinct_share']:>8.2f}")
    return seconds


def _print_breakdown(result: dict) -> None:
    breakdown = result["breakdown"]
    if not breakdown:
        return
    total = sum(breakdown.values())
    parts = ", ".join(f"{stage} {100 * seconds / total:.1f}%"
                      for stage, seconds in sorted(breakdown.items(), key=lambda kv: -kv[1]))
    print(f"  {result['library']} {result['config']}: op time {total:.2f} s — {parts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="mid,standard")
    parser.add_argument("--batches", type=int, default=20, help="timed batches")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first batches")
    parser.add_argument("--trace", action="store_true",
                        help="trace one extra step for the per-stage breakdown")
    parser.add_argument("--original_dir", default=os.environ.get("BILM_ORIGINAL_DIR"))
    parser.add_argument("--levers", nargs="?", const=",".join(LEVERS), default="",
                        help="also time our graph with each speed lever (comma-separated; "
                             "all if none given) turned off: "
                             "bilm-no-distinct (char CNN on every token), bilm-no-unrolled "
                             "(LSTM in a while loop, as before), bilm-no-lstm_gradient "
                             "(unrolled, TensorFlow's own gradient), bilm-no-prefix "
                             "(char convolutions over all character positions), "
                             "bilm-no-transposed_copies (the LSTM gradient's per-step "
                             "products by a transposed kernel)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = run_worker(args.worker, args.configs, json.loads(args.files),
                            args.batches, args.warmup, args.trace)
        print(json.dumps(result))
        return

    configs = args.configs.split(",")
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown config {unknown}; choose from {sorted(CONFIGS)}")
    workdir = tempfile.mkdtemp(prefix="bilm-train-bench-")
    files = write_corpus(workdir, n_tokens=2_000_000)
    libraries = ["bilm"] + (["original"] if args.original_dir else [])
    libraries += [f"bilm-no-{lever}" for lever in args.levers.split(",") if lever]
    flops = [matmul_flops()]
    results = []
    for config in configs:
        for library in libraries:
            results.append(_run_in_subprocess(library, config, files, args))
            flops.append(matmul_flops())
    n_measurements, flops = len(flops), max(flops)

    import tensorflow as tf
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, TensorFlow {tf.__version__}, "
          f"{time.strftime('%Y-%m-%d')}; matmul 2048^3 float32 {flops / 1e9:.1f} GFLOP/s "
          f"(best of {n_measurements})")
    print(f"{'library':<22} {'config':<9} {'s/batch':>8} {'feed ms':>7} {'tokens/s':>9} "
          f"{'of ceil':>7} {'peak GB':>8} {'build s':>7} {'distinct':>8}")
    medians = {}
    for result in results:
        options = CONFIGS[result["config"]]
        medians[result["library"], result["config"]] = _print_result(
            result, flops, flop_per_token(options),
            options["batch_size"] * options["unroll_steps"])
    for config in configs:
        options = CONFIGS[config]
        print(f"{config}: {flop_per_token(options) / 1e6:.0f} MFLOP/token "
              f"(forward multiply-adds, M: " + ", ".join(
                  f"{k} {v / 1e6:.1f}" for k, v in forward_macs_per_token(options).items())
              + ")")
        if ("original", config) in medians:
            print(f"  bilm / original speed: "
                  f"{medians['original', config] / medians['bilm', config]:.2f}x")
    for result in results:
        _print_breakdown(result)


if __name__ == "__main__":
    main()
