"""Build the vocabulary file the trainer expects from tokenized training files.

    python bin/build_vocab.py --train_prefix 'data/train-*' --vocab_file vocab.txt \
        [--min_count 1] [--max_size N]

Writes <S>, </S>, <UNK>, then tokens by descending count (ties in code-point
order), and prints the number of training tokens to pass as --n_train_tokens.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bilm.corpus import build_vocabulary  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_prefix", required=True, help="glob of training files")
    parser.add_argument("--vocab_file", required=True, help="vocabulary file to write")
    parser.add_argument("--min_count", type=int, default=1,
                        help="drop tokens seen fewer times (default 1)")
    parser.add_argument("--max_size", type=int, default=None,
                        help="keep at most this many entries, special tokens included")
    args = parser.parse_args()
    size, n_tokens = build_vocabulary(args.train_prefix, args.vocab_file,
                                      args.min_count, args.max_size)
    print(f"wrote {size} entries to {args.vocab_file}")
    print(f"n_train_tokens: {n_tokens}")


if __name__ == "__main__":
    main()
