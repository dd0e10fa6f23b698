"""How far our stateful embeddings are from the original's, next to float32 rounding.

    python bench/rounding_vs_original.py [--lstm_dim 64 --projection_dim 32 ...]
    BILM_ORIGINAL_DIR=/work/original python bench/rounding_vs_original.py

In one run it (a) writes a random-weight model (by default 3 LSTM layers of
64 cells projected to 32, skip connections, no cell or projection clip, tanh
char CNN with one highway layer; `write_random_weights` with the LSTM kernels
scaled by `--lstm_scale`, 4 by default: with the Glorot scale alone the
recurrence damps rounding differences and every column stays below 1e-6),
a vocabulary and a few generated sentences,
(b) runs them as 6 stateful batches of 1-4 sentences (sizes
`--batch_sizes`), one `session.run` per batch through one placeholder with
the LSTM states carried between batches, the way the original's usage does,
with our `BidirectionalLanguageModel` and, when BILM_ORIGINAL_DIR (or
--original_dir) names the peer built by shared/peers/setup_original.sh, the
original's, each with oneDNN on and off (TF_ENABLE_ONEDNN_OPTS=1/0, each in
its own process), and (c) computes the same batches in float64 with the
independent NumPy biLM (tests/numpy_bilm.py, same state carry-over), the
"exact" value of the float32 network.

It prints, per batch, the max abs difference over every valid output
(lm_embeddings at the mask; padding positions are left out, where the NumPy
reference zeroes layer 0 and the TF graphs keep the padding token's
embedding) for: orig on/off, ours(on) vs orig(on), ours(off) vs orig(off),
ours on/off, each float32 run vs float64, and the largest output magnitude;
then the same per layer (max over batches), and whether ours and the
original agree bit for bit. If ours-vs-float64 is of the size of
original-vs-float64, the gap between the two libraries is float32 rounding
in two different, equally accurate, orders. Nothing here is a test.

Measured 2026-11-26 (2-core Xeon, AVX-512, TF 2.21, defaults). Before: ours
vs the original 3.8e-6, the original vs itself (oneDNN on/off) 5.0e-6, both
1.1e-5 from float64 -- rounding alone. The one difference in order was the
LSTM gate product: TF1's LSTMCell computes bias_add(concat([x_t, h]) . W, b)
per step, where we computed x . W_x + b for all steps before the loop and
added h . W_h in it. The stateful (faithful) path now uses TF1's order
(`run_lstm(..., tf1_gate_order=True)`): ours vs the original 0.0, bit for
bit, with oneDNN on and off; the batched stateless path keeps the hoisted
product.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_CHARS = 50


# ---------------------------------------------------------------------------
# The model, the vocabulary and the sentences
# ---------------------------------------------------------------------------

def make_options(args) -> dict:
    filters = [[1, 8], [2, 8], [3, 16], [4, 32]]
    if args.filters == "wide":
        filters = [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256]]
    return {
        "lstm": {"dim": args.lstm_dim, "projection_dim": args.projection_dim,
                 "n_layers": args.n_layers, "cell_clip": None, "proj_clip": None,
                 "use_skip_connections": True},
        "char_cnn": {"n_characters": 262, "max_characters_per_token": MAX_CHARS,
                     "embedding": {"dim": 16}, "activation": args.activation,
                     "n_highway": args.n_highway, "filters": filters},
    }


def write_inputs(workdir: str, args) -> dict:
    """options.json, weights.hdf5, vocab.txt and batches.json under workdir."""
    sys.path.insert(0, REPO)  # this checkout's bilm (the driver only: workers pick theirs)
    from bilm.weights import inference_weight_shapes, write_random_weights  # no TensorFlow
    options = make_options(args)
    files = {name: os.path.join(workdir, name)
             for name in ("options.json", "weights.hdf5", "vocab.txt", "batches.json")}
    with open(files["options.json"], "w") as fout:
        json.dump(options, fout)
    write_random_weights(options, files["weights.hdf5"], seed=args.seed)
    if args.lstm_scale != 1.0:
        import h5py
        with h5py.File(files["weights.hdf5"], "r+") as fout:
            for name in inference_weight_shapes(options):
                if name.endswith("/W_0"):
                    fout[name][...] = fout[name][...] * np.float32(args.lstm_scale)

    rng = np.random.default_rng(args.seed)
    letters = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ.,'-")
    words = sorted({"".join(rng.choice(letters, size=rng.integers(1, 12)))
                    for _ in range(300)})
    with open(files["vocab.txt"], "w") as fout:
        fout.write("\n".join(["<S>", "</S>", "<UNK>"] + words) + "\n")
    batches = [[[str(w) for w in rng.choice(words, size=rng.integers(3, args.max_tokens + 1))]
                for _ in range(size)] for size in args.batch_sizes]
    with open(files["batches.json"], "w") as fout:
        json.dump(batches, fout)
    return files


# ---------------------------------------------------------------------------
# The worker: one library, one oneDNN setting, in its own process
# ---------------------------------------------------------------------------

def run_worker(files: dict, outfile: str, threads: int) -> None:
    """Run the batches statefully, as the usage examples do; save ids and outputs."""
    import tensorflow.compat.v1 as tf
    from bilm import Batcher, BidirectionalLanguageModel

    with open(files["batches.json"]) as fin:
        batches = json.load(fin)
    batcher = Batcher(files["vocab.txt"], MAX_CHARS)
    results = {}
    with tf.Graph().as_default():
        ids_placeholder = tf.placeholder("int32", shape=(None, None, MAX_CHARS))
        model = BidirectionalLanguageModel(files["options.json"], files["weights.hdf5"])
        ops = model(ids_placeholder)
        config = tf.ConfigProto(intra_op_parallelism_threads=threads,
                                inter_op_parallelism_threads=threads)
        with tf.Session(config=config) as sess:
            sess.run(tf.global_variables_initializer())
            for k, sentences in enumerate(batches):
                ids = batcher.batch_sentences(sentences)
                lm, mask = sess.run([ops["lm_embeddings"], ops["mask"]],
                                    feed_dict={ids_placeholder: ids})
                results[f"ids_{k}"], results[f"lm_{k}"], results[f"mask_{k}"] = ids, lm, mask
    np.savez(outfile, **results)


def _worker_command(library: str, original_dir: str, onednn: str) -> tuple:
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn)
    if library == "original":
        env["TF_USE_LEGACY_KERAS"] = "1"
        env["PYTHONPATH"] = os.path.join(original_dir, "src")
        return [os.path.join(original_dir, "venv", "bin", "python")], env
    env["PYTHONPATH"] = REPO
    return [sys.executable], env


def run_in_subprocess(library: str, onednn: str, files: dict, workdir: str, args) -> dict:
    outfile = os.path.join(workdir, f"{library}_onednn{onednn}.npz")
    python, env = _worker_command(library, args.original_dir, onednn)
    command = python + [os.path.abspath(__file__), "--worker", "--files", json.dumps(files),
                        "--out", outfile, "--threads", str(args.threads)]
    result = subprocess.run(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        raise SystemExit(f"{library} with TF_ENABLE_ONEDNN_OPTS={onednn} failed "
                         f"(exit {result.returncode})")
    with np.load(outfile) as saved:
        return dict(saved)


# ---------------------------------------------------------------------------
# The float64 reference and the comparison
# ---------------------------------------------------------------------------

def float64_reference(files: dict, ids_per_batch: list) -> list:
    spec = importlib.util.spec_from_file_location(
        "numpy_bilm", os.path.join(REPO, "tests", "numpy_bilm.py"))
    numpy_bilm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(numpy_bilm)
    reference = numpy_bilm.NumpyBiLM(files["options.json"], files["weights.hdf5"],
                                     dtype=np.float64)
    return [reference.run(ids)["lm_embeddings"] for ids in ids_per_batch]


def max_abs_diff(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Max abs difference per layer over valid positions: [n_layers + 1]."""
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))  # [B, L+1, T-2, D]
    diff = np.where(mask[:, None, :, None], diff, 0.0)
    return diff.max(axis=(0, 2, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lstm_dim", type=int, default=64)
    parser.add_argument("--projection_dim", type=int, default=32)
    parser.add_argument("--n_layers", type=int, default=3)
    parser.add_argument("--n_highway", type=int, default=1)
    parser.add_argument("--activation", default="tanh", choices=["tanh", "relu"])
    parser.add_argument("--filters", default="small", choices=["small", "wide"],
                        help="small: 64 filters of width 1-4; wide: 512 of width 1-5")
    parser.add_argument("--batch_sizes", default="2,4,1,3,4,2",
                        type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--max_tokens", type=int, default=25, help="tokens per sentence, max")
    parser.add_argument("--lstm_scale", type=float, default=4.0,
                        help="multiply the LSTM kernels (W_0) by this: > 1 makes the "
                             "recurrence more sensitive to rounding")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="TF threads (0: TF default)")
    parser.add_argument("--original_dir", default=os.environ.get("BILM_ORIGINAL_DIR"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(json.loads(args.files), args.out, args.threads)
        return

    libraries = ["ours"] + (["orig"] if args.original_dir else [])
    n_batches = len(args.batch_sizes)
    with tempfile.TemporaryDirectory(prefix="bilm-rounding-") as workdir:
        files = write_inputs(workdir, args)
        runs = {}  # (library, oneDNN "1"/"0") -> saved ids, outputs, masks
        for library in libraries:
            for onednn in ("1", "0"):
                runs[library, onednn] = run_in_subprocess(
                    "original" if library == "orig" else "bilm", onednn, files, workdir, args)
        ids = [runs["ours", "1"][f"ids_{k}"] for k in range(n_batches)]
        for (library, onednn), run in runs.items():
            for k in range(n_batches):
                if not np.array_equal(run[f"ids_{k}"], ids[k]):
                    raise SystemExit(f"{library} (oneDNN {onednn}) was fed other ids "
                                     f"in batch {k}")
        exact = float64_reference(files, ids)
    print_tables(args, libraries, runs, exact)


def print_tables(args, libraries: list, runs: dict, exact: list) -> None:
    n_batches = len(args.batch_sizes)
    columns = []  # (title, first run, second run or "f64")
    if "orig" in libraries:
        columns += [("orig on/off", ("orig", "1"), ("orig", "0")),
                    ("ours-orig on", ("ours", "1"), ("orig", "1")),
                    ("ours-orig off", ("ours", "0"), ("orig", "0"))]
    columns += [("ours on/off", ("ours", "1"), ("ours", "0"))]
    if "orig" in libraries:
        columns += [("orig on-f64", ("orig", "1"), "f64"), ("orig off-f64", ("orig", "0"), "f64")]
    columns += [("ours on-f64", ("ours", "1"), "f64"), ("ours off-f64", ("ours", "0"), "f64")]

    def output(key, k):
        return exact[k] if key == "f64" else runs[key][f"lm_{k}"]

    lstm = make_options(args)["lstm"]
    print(f"model: LSTM {lstm['dim']}/{lstm['projection_dim']} x {lstm['n_layers']} layers, "
          f"skip connections, no clip, {args.activation} CNN ({args.filters} filters), "
          f"{args.n_highway} highway; LSTM kernels x{args.lstm_scale}; seed {args.seed}; "
          f"batches of {args.batch_sizes} sentences")
    print(f"original: {args.original_dir or '(not run: set BILM_ORIGINAL_DIR)'}")
    print("max abs difference over valid outputs, all layers, per batch:")
    print(f"{'batch':>5} {'rows':>4} {'steps':>5} " + " ".join(f"{t:>13}" for t, _, _ in columns)
          + f" {'max |out|':>9}")
    per_layer = {title: 0.0 for title, _, _ in columns}
    for k in range(n_batches):
        mask = runs["ours", "1"][f"mask_{k}"]
        diffs = []
        for title, first, second in columns:
            d = max_abs_diff(output(first, k), output(second, k), mask)
            per_layer[title] = np.maximum(per_layer[title], d)
            diffs.append(d.max())
        magnitude = np.abs(np.where(mask[:, None, :, None], exact[k], 0.0)).max()
        print(f"{k:>5} {mask.shape[0]:>4} {mask.shape[1] + 2:>5} "
              + " ".join(f"{d:>13.2e}" for d in diffs) + f" {magnitude:>9.2f}")
    print("per layer (0: char CNN token embedding), max over batches:")
    print(f"{'layer':>5} " + " ".join(f"{t:>13}" for t, _, _ in columns))
    for layer in range(lstm["n_layers"] + 1):
        print(f"{layer:>5} " + " ".join(f"{per_layer[t][layer]:>13.2e}" for t, _, _ in columns))
    worst = {title: float(per_layer[title].max()) for title in per_layer}
    if "orig" in libraries:
        identical = all(np.array_equal(runs["ours", o][f"lm_{k}"], runs["orig", o][f"lm_{k}"])
                        for o in ("1", "0") for k in range(n_batches))
        print(f"ours vs original: {max(worst['ours-orig on'], worst['ours-orig off']):.2e}"
              + (" (bit for bit identical)" if identical else "")
              + f"; original vs itself (oneDNN on/off): {worst['orig on/off']:.2e}")
        original_error = max(worst["orig on-f64"], worst["orig off-f64"])
        our_error = max(worst["ours on-f64"], worst["ours off-f64"])
        print(f"distance to float64: original {original_error:.2e}, ours {our_error:.2e}")


if __name__ == "__main__":
    main()
