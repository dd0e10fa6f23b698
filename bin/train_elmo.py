#!/usr/bin/env python
"""Train a biLM from scratch.

Defaults are the original ELMo hyperparameters (bidirectional, char CNN with
2048 filters, 2 x LSTM 4096/512 with skip connections, 3 towers of batch 128).
--options FILE (alias --options_file) replaces any of them (nested sections
are merged key by key); --n_gpus, --batch_size, --n_epochs, --n_train_tokens
and --checkpoint_every win over both. Without --n_train_tokens the tokens of
the training files are counted.

  python bin/train_elmo.py --train_prefix 'data/train-*' \\
      --vocab_file data/vocab.txt --save_dir checkpoints/

On a cluster every task runs this script with the same arguments plus its
place in the cluster (or the TF_CONFIG environment variable); ps tasks only
serve variables, each worker reads its share of the training data (its own
files, or every n-th line of every file when there are fewer files than
workers), worker 0 (the chief) writes the checkpoints. When the chief ends
the run every task exits on its own (status 0); a chief stopped by
--worker_timeout exits with status 3. bin/launch_local_cluster.py starts a
whole cluster on this machine.

  python bin/train_elmo.py ... --ps_hosts h0:2222 --worker_hosts h1:2222,h2:2222 \\
      --job_name worker --task_index 0
"""
import argparse
import copy
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bilm.cluster import (EXIT_WORKER_TIMEOUT, WorkerTimeoutError,  # noqa: E402
                          add_cluster_arguments, cluster_from_args, run_parameter_server)
from bilm.corpus import count_train_tokens  # noqa: E402
from bilm.training import load_data, train  # noqa: E402

logger = logging.getLogger("train_elmo")

DEFAULT_OPTIONS = {
    "bidirectional": True,
    "char_cnn": {
        "activation": "relu",
        "embedding": {"dim": 16},
        "filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]],
        "max_characters_per_token": 50,
        "n_characters": 261,
        "n_highway": 2,
    },
    "dropout": 0.1,
    "lstm": {
        "cell_clip": 3,
        "dim": 4096,
        "n_layers": 2,
        "proj_clip": 3,
        "projection_dim": 512,
        "use_skip_connections": True,
    },
    "all_clip_norm_val": 10.0,
    "n_epochs": 10,
    "batch_size": 128,  # per tower
    "unroll_steps": 20,
    "n_negative_samples_batch": 8192,
}
DEFAULT_N_GPUS = 3


def merged(defaults: dict, overrides: dict) -> dict:
    """`defaults` with `overrides` applied; nested dicts merge key by key
    (a null value removes the key, e.g. "char_cnn": null for word input)."""
    result = copy.deepcopy(defaults)
    for key, value in overrides.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def main(args: argparse.Namespace) -> int:
    """Train (or serve, on a ps task); returns the exit status."""
    cluster = cluster_from_args(args)
    if cluster is not None and cluster.job_name == "ps":
        run_parameter_server(cluster)
        return 0
    options = copy.deepcopy(DEFAULT_OPTIONS)
    if args.options_file:
        with open(args.options_file, encoding="utf-8") as fin:
            options = merged(options, json.load(fin))
    for key in ("batch_size", "n_epochs", "n_train_tokens", "checkpoint_every"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if "n_train_tokens" not in options:
        options["n_train_tokens"] = count_train_tokens(args.train_prefix)
        logger.info("counted n_train_tokens = %d in %s", options["n_train_tokens"],
                    args.train_prefix)

    vocab, data = load_data(options, args.vocab_file, args.train_prefix, cluster=cluster)
    options["n_tokens_vocab"] = vocab.size
    try:
        train(options, data, args.n_gpus, args.save_dir, args.save_dir, cluster=cluster)
    except WorkerTimeoutError as err:
        logger.error("%s", err)
        return EXIT_WORKER_TIMEOUT
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--save_dir", required=True, help="Location of checkpoint files")
    parser.add_argument("--vocab_file", required=True, help="Vocabulary file")
    parser.add_argument("--train_prefix", required=True,
                        help="Glob of the training files (quote it)")
    parser.add_argument("--n_gpus", type=int, default=DEFAULT_N_GPUS,
                        help="Number of towers (GPUs; they run on the CPU without one)")
    parser.add_argument("--batch_size", type=int, help="Batch size per tower (128)")
    parser.add_argument("--n_epochs", type=int, help="Number of epochs (10)")
    parser.add_argument("--n_train_tokens", type=int,
                        help="Tokens in the training data (default: count them)")
    parser.add_argument("--checkpoint_every", type=int,
                        help="Checkpoint every N batches (global steps) (1250)")
    parser.add_argument("--options", "--options_file", dest="options_file", metavar="FILE",
                        help="JSON with model and training hyperparameters replacing "
                        "the defaults (merged key by key)")
    add_cluster_arguments(parser)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main(parser.parse_args()))
