"""Perplexity of a unigram model: the baseline for a trained biLM.

    python scripts/unigram_perplexity.py --vocab_file vocab.txt \
        --train_prefix 'data/train-*' --test_file data/heldout.txt

Counts come from the training files, mapped through the vocabulary (unknown
tokens count as <UNK>), with add-one smoothing. Each sentence also predicts
its end token, as the biLM's test() does, so the two numbers compare.
"""
import argparse
import collections
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bilm.corpus import training_files  # noqa: E402
from bilm.data import Vocabulary, iter_tokenized_lines  # noqa: E402


def token_ids(vocab: Vocabulary, paths):
    for path in paths:
        for tokens in iter_tokenized_lines(path):
            if tokens:
                yield from (vocab.word_to_id(t) for t in tokens)
                yield vocab.eos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab_file", required=True)
    parser.add_argument("--train_prefix", required=True)
    parser.add_argument("--test_file", required=True)
    args = parser.parse_args()
    vocab = Vocabulary(args.vocab_file, validate_file=True)
    counts = collections.Counter(token_ids(vocab, training_files(args.train_prefix)))
    total = sum(counts.values()) + vocab.size
    log_prob, n = 0.0, 0
    for token_id in token_ids(vocab, [args.test_file]):
        log_prob += math.log((counts[token_id] + 1) / total)
        n += 1
    print(f"unigram perplexity on {args.test_file}: {math.exp(-log_prob / n):.1f} "
          f"({n} predictions)")


if __name__ == "__main__":
    main()
