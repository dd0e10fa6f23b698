#!/usr/bin/env python
"""Run a training cluster on this machine: ps tasks and workers as processes.

Picks free localhost ports, starts every task with the training script's
arguments plus its place in the cluster, prints each task's log lines
prefixed with "[worker 1] " etc., and waits until the run ends: the workers
finish and the ps tasks exit on their own once the chief has ended the run
(one that does not within 30 s is ended). Exits non-zero if a task fails
(the others are ended: they could wait for it) or --timeout passes.

  python bin/launch_local_cluster.py --n_ps 1 --n_workers 2 -- \\
      --train_prefix 'data/train-*' --vocab_file data/vocab.txt \\
      --save_dir checkpoints/ --options options.json --n_gpus 1
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bilm.local_cluster import launch_local_cluster  # noqa: E402

BIN_DIR = os.path.dirname(os.path.abspath(__file__))


def main(args: argparse.Namespace, script_args) -> int:
    if script_args and script_args[0] == "--":
        script_args = script_args[1:]
    script = args.script if os.path.sep in args.script else os.path.join(BIN_DIR, args.script)
    command = [sys.executable, script, *script_args]
    return launch_local_cluster(command, args.n_ps, args.n_workers, args.timeout)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Every other argument goes to the training script.")
    parser.add_argument("--n_ps", type=int, default=1, help="Parameter-server tasks (1)")
    parser.add_argument("--n_workers", type=int, default=2, help="Worker tasks (2)")
    parser.add_argument("--script", default="train_elmo.py",
                        help="Training script: train_elmo.py (default) or restart.py, "
                        "or a path")
    parser.add_argument("--timeout", type=float, default=7 * 24 * 3600,
                        help="Seconds to wait for the workers (a week)")
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main(*parser.parse_known_args()))
