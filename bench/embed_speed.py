"""Embedding speed on the standard ELMo size: faithful path vs fast path.

    python bench/embed_speed.py [--sentences 1000] [--faithful_sentences 1000]

In one run it (a) writes a random-weight model with the standard ELMo options
(2x4096_512_2048cnn_2xhighway, skip connections, clips 3), (b) measures this
machine's float32 matrix product rate with TensorFlow, (c) embeds the same
generated sentences (20-30 tokens) with the faithful one-sentence-per-run
`dump_bilm_embeddings` and with the batched one (`batch_size=64`), and
prints tokens/s, the ratio fast/faithful, and the fraction of the arithmetic
ceiling (tokens/s x FLOP/token / measured FLOP/s). The dumps are timed whole
(model build, weight loading and hdf5 writing included); the "steady" row
times the same batched embedding with an `Embedder` that is already built.
The matrix product rate is the best of several measurements taken around the
runs, so a busy moment of a shared machine does not inflate the fractions.
Nothing here is a test.
"""
import argparse
import json
import os
import platform
import subprocess
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

from bilm import dump_bilm_embeddings  # noqa: E402
from bilm.embedder import Embedder  # noqa: E402
from bilm.weights import write_random_weights  # noqa: E402
from matmul_rate import matmul_flops  # noqa: E402

STANDARD_OPTIONS = {
    "lstm": {"dim": 4096, "projection_dim": 512, "n_layers": 2, "cell_clip": 3,
             "proj_clip": 3, "use_skip_connections": True},
    "char_cnn": {"n_characters": 262, "max_characters_per_token": 50,
                 "embedding": {"dim": 16}, "activation": "relu", "n_highway": 2,
                 "filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256],
                             [6, 512], [7, 1024]]},
}


def flop_per_token(options: dict) -> float:
    """Floating-point operations (2 per multiply-add) for one token."""
    cnn, lstm = options["char_cnn"], options["lstm"]
    char_dim, max_chars = cnn["embedding"]["dim"], cnn["max_characters_per_token"]
    n_filters = sum(count for _, count in cnn["filters"])
    macs = sum(width * char_dim * count * (max_chars - width + 1)
               for width, count in cnn["filters"])
    macs += cnn["n_highway"] * 2 * n_filters * n_filters
    proj, dim = lstm["projection_dim"], lstm["dim"]
    if n_filters != proj:
        macs += n_filters * proj
    per_cell = (proj + proj) * 4 * dim + dim * proj
    macs += 2 * lstm["n_layers"] * per_cell
    return 2.0 * macs


def make_sentences(n: int, seed: int = 0) -> list:
    """Sentences of 20-30 word-like tokens (3-10 letters, some capitalized)."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlucmfwypvbgkjqxz"))
    weights = np.linspace(2.0, 0.2, len(letters))
    weights /= weights.sum()
    sentences = []
    for _ in range(n):
        tokens = []
        for _ in range(rng.integers(20, 31)):
            word = "".join(rng.choice(letters, size=rng.integers(3, 11), p=weights))
            tokens.append(word.capitalize() if rng.random() < 0.1 else word)
        sentences.append(tokens)
    return sentences


def time_dump(files: dict, dataset_file: str, outfile: str, **kwargs) -> float:
    start = time.perf_counter()
    dump_bilm_embeddings(files["vocab"], dataset_file, files["options"],
                         files["weights"], outfile, **kwargs)
    return time.perf_counter() - start


# Run by the original library's Python (BILM_ORIGINAL_DIR): its graph on the
# same sentences, sorted by length, batch_size at a time; prints tokens/s.
ORIGINAL_BATCHED = """
import json, sys, time
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
from bilm import Batcher, BidirectionalLanguageModel
vocab, options, weights, sentences_file, batch_size = sys.argv[1:6]
batch_size = int(batch_size)
sentences = sorted((line.split() for line in open(sentences_file, encoding="utf-8")), key=len)
batcher = Batcher(vocab, 50)
ids = tf.placeholder("int32", shape=(None, None, 50))
ops = BidirectionalLanguageModel(options, weights, max_batch_size=batch_size)(ids)
with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    sess.run(ops["lm_embeddings"], {ids: batcher.batch_sentences(sentences[:batch_size])})
    start = time.perf_counter()
    for k in range(0, len(sentences), batch_size):
        sess.run(ops["lm_embeddings"], {ids: batcher.batch_sentences(sentences[k:k + batch_size])})
    print(sum(map(len, sentences)) / (time.perf_counter() - start))
"""


def original_batched_rate(original_dir: str, files: dict, dataset_file: str,
                          batch_size: int) -> float:
    """tokens/s of the original library's graph, batched (steady state)."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1",
               PYTHONPATH=os.path.join(original_dir, "src"))
    result = subprocess.run(
        [os.path.join(original_dir, "venv", "bin", "python"), "-c", ORIGINAL_BATCHED,
         files["vocab"], files["options"], files["weights"], dataset_file, str(batch_size)],
        env=env, stdout=subprocess.PIPE, text=True, check=True)
    return float(result.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--faithful_sentences", type=int, default=1000,
                        help="sentences for the (slow) faithful path")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--skip_faithful", action="store_true")
    parser.add_argument("--original_dir", default=os.environ.get("BILM_ORIGINAL_DIR"),
                        help="the original library's peer (shared/peers): adds its "
                             "graph run batch_size sentences at a time")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="bilm-bench-")
    files = {"options": os.path.join(workdir, "options.json"),
             "weights": os.path.join(workdir, "weights.hdf5"),
             "vocab": os.path.join(workdir, "vocab.txt")}
    with open(files["options"], "w", encoding="utf-8") as fout:
        json.dump(STANDARD_OPTIONS, fout)
    write_random_weights(STANDARD_OPTIONS, files["weights"], seed=0)
    with open(files["vocab"], "w", encoding="utf-8") as fout:
        fout.write("<S>\n</S>\n<UNK>\n")

    sentences = make_sentences(max(args.sentences, args.faithful_sentences))
    datasets = {}
    for name, n in (("fast", args.sentences), ("faithful", args.faithful_sentences)):
        datasets[name] = (os.path.join(workdir, f"{name}.txt"),
                          sum(len(s) for s in sentences[:n]))
        with open(datasets[name][0], "w", encoding="utf-8") as fout:
            fout.writelines(" ".join(s) + "\n" for s in sentences[:n])

    flops = [matmul_flops()]
    per_token = flop_per_token(STANDARD_OPTIONS)
    results = {}
    fast_seconds = time_dump(files, datasets["fast"][0], os.path.join(workdir, "fast.hdf5"),
                             batch_size=args.batch_size)
    results["fast"] = datasets["fast"][1] / fast_seconds
    flops.append(matmul_flops())
    with Embedder(files["options"], files["weights"], files["vocab"],
                  batch_size=args.batch_size) as embedder:
        embedder.embed_sentences(sentences[:args.batch_size])  # warm up
        start = time.perf_counter()
        embedder.embed_sentences(sentences[:args.sentences])
        results["steady"] = datasets["fast"][1] / (time.perf_counter() - start)
    flops.append(matmul_flops())
    if args.original_dir:
        results["original"] = original_batched_rate(args.original_dir, files,
                                                    datasets["fast"][0], args.batch_size)
        flops.append(matmul_flops())
    if not args.skip_faithful:
        seconds = time_dump(files, datasets["faithful"][0],
                            os.path.join(workdir, "faithful.hdf5"))
        results["faithful"] = datasets["faithful"][1] / seconds
        flops.append(matmul_flops())
    flops = max(flops)
    ceiling = flops / per_token

    print(f"machine: {platform.machine()} {os.cpu_count()} cores, "
          f"TensorFlow {tf.__version__}, {time.strftime('%Y-%m-%d')}")
    print(f"matmul 2048^3 float32: {flops / 1e9:.1f} GFLOP/s; "
          f"{per_token / 1e6:.1f} MFLOP/token; ceiling {ceiling:.0f} tokens/s")
    print(f"{'path':<10} {'sentences':>9} {'tokens':>7} {'tokens/s':>9} {'of ceiling':>10}")
    for name, rate in results.items():
        data = "faithful" if name == "faithful" else "fast"
        n = args.faithful_sentences if data == "faithful" else args.sentences
        print(f"{name:<10} {n:>9} {datasets[data][1]:>7} {rate:>9.1f} "
              f"{rate / ceiling:>10.2f}")
    if "faithful" in results:
        print(f"fast / faithful: {results['fast'] / results['faithful']:.1f}x")
    if "original" in results:
        print(f"steady / original batched: {results['steady'] / results['original']:.2f}x")


if __name__ == "__main__":
    main()
