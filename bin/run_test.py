#!/usr/bin/env python
"""Perplexity of the latest checkpoint of a training directory on test files.

  python bin/run_test.py --test_prefix data/heldout.txt \\
      --vocab_file data/vocab.txt --save_dir checkpoints/
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bilm.training import load_data, load_options_latest_checkpoint, test  # noqa: E402

logger = logging.getLogger("run_test")


def main(args: argparse.Namespace) -> float:
    options, ckpt_file = load_options_latest_checkpoint(args.save_dir)
    _, data = load_data(options, args.vocab_file, args.test_prefix, test=True)
    perplexity = test(options, ckpt_file, data, batch_size=args.batch_size)
    logger.info("test perplexity of %s: %.4f", ckpt_file, perplexity)
    return perplexity


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--save_dir", required=True, help="Location of checkpoint files")
    parser.add_argument("--vocab_file", required=True, help="Vocabulary file")
    parser.add_argument("--test_prefix", required=True,
                        help="Glob of the test files (quote it)")
    parser.add_argument("--batch_size", type=int, default=256, help="Batch size")
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(parser.parse_args())
