"""Build the vocabulary file the trainer expects from tokenized training files.

    python bin/build_vocab.py --train_prefix 'data/train-*' --vocab_file data/vocab.txt \
        [--min_count 1] [--max_size N]

The same as `bilm vocab ...`: writes <S>, </S>, <UNK>, then tokens by
descending count (ties in code-point order), and prints the number of
training tokens to pass as --n_train_tokens.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bilm.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["vocab", *sys.argv[1:]]))
