#!/usr/bin/env python
"""Continue training from the latest checkpoint of a training directory.

Weights, Adagrad accumulators and global_step are restored (checkpoints of
the original TF1 library, including its old LSTM names, load too). Flags left
at 0 keep the value of the saved options.json.

  python bin/restart.py --train_prefix 'data/train-*' \\
      --vocab_file data/vocab.txt --save_dir checkpoints/ --n_epochs 1

On a cluster (the flags of bin/train_elmo.py or TF_CONFIG) the chief restores
the checkpoint; every worker reads the options from save_dir/options.json, so
copy that file to the workers' save_dir when they run on other machines. The
data is shared out and the run ends as with bin/train_elmo.py (a chief
stopped by --worker_timeout exits with status 3).
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bilm.cluster import (EXIT_WORKER_TIMEOUT, WorkerTimeoutError,  # noqa: E402
                          add_cluster_arguments, cluster_from_args, run_parameter_server)
from bilm.options import load_options  # noqa: E402
from bilm.training import load_data, load_options_latest_checkpoint, train  # noqa: E402


logger = logging.getLogger("restart")


def main(args: argparse.Namespace) -> int:
    """Continue training (or serve, on a ps task); returns the exit status."""
    cluster = cluster_from_args(args)
    if cluster is not None and cluster.job_name == "ps":
        run_parameter_server(cluster)
        return 0
    if cluster is None or cluster.is_chief:
        options, ckpt_file = load_options_latest_checkpoint(args.save_dir)
    else:  # only the chief restores
        options, ckpt_file = load_options(os.path.join(args.save_dir, "options.json")), None
    _, data = load_data(options, args.vocab_file, args.train_prefix, cluster=cluster)
    for key in ("n_train_tokens", "n_epochs", "batch_size", "checkpoint_every"):
        if getattr(args, key) > 0:
            options[key] = getattr(args, key)
    try:
        train(options, data, args.n_gpus, args.save_dir, args.save_dir,
              restart_ckpt_file=ckpt_file, cluster=cluster)
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
    parser.add_argument("--n_gpus", type=int, default=1, help="Number of towers")
    parser.add_argument("--batch_size", type=int, default=0)
    parser.add_argument("--n_train_tokens", type=int, default=0)
    parser.add_argument("--n_epochs", type=int, default=0)
    parser.add_argument("--checkpoint_every", type=int, default=0)
    add_cluster_arguments(parser)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main(parser.parse_args()))
