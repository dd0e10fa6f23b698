"""Shuffle a tokenized corpus into training shards and a heldout file.

    python bin/split_corpus.py --input corpus.txt --output_dir data \
        [--n_shards 10] [--heldout_fraction 0.01] [--seed 0]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bilm.corpus import split_corpus  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="one tokenized sentence per line")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--n_shards", type=int, default=10)
    parser.add_argument("--heldout_fraction", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shards, heldout = split_corpus(args.input, args.output_dir, args.n_shards,
                                   args.heldout_fraction, args.seed)
    print(f"wrote {len(shards)} shards and {heldout}")


if __name__ == "__main__":
    main()
