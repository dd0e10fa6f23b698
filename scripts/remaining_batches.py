"""Print how many batches a training run still has to go, for resuming it.

    python scripts/remaining_batches.py SAVE_DIR 'data/train-*' --n_epochs 4 \
        --tokens_per_batch 1280

The schedule is n_epochs passes over the training tokens (counted in the
files, as bin/train_elmo.py counts them); the latest checkpoint's global_step
says how many batches are done. Prints 0 when the run is complete.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("save_dir")
    parser.add_argument("train_prefix")
    parser.add_argument("--n_epochs", type=int, required=True)
    parser.add_argument("--tokens_per_batch", type=int, required=True)
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow.compat.v1 as tf
    from bilm.corpus import count_train_tokens
    checkpoint = tf.train.latest_checkpoint(args.save_dir)
    if checkpoint is None:
        raise SystemExit(f"{args.save_dir}: no checkpoint to resume from")
    done = int(tf.train.load_variable(checkpoint, "global_step"))
    total = args.n_epochs * (count_train_tokens(args.train_prefix) // args.tokens_per_batch)
    print(max(total - done, 0))


if __name__ == "__main__":
    main()
