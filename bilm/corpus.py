"""From raw tokenized text to what the trainer reads: vocabulary and shards.

No TensorFlow here. Training files hold one tokenized sentence per line
(tokens separated by whitespace), UTF-8.
"""
import collections
import glob
import os
import random
from typing import Iterable, List, Optional, Tuple

from .data import iter_tokenized_lines
from .files import atomic_output

SPECIAL_TOKENS = ("<S>", "</S>", "<UNK>")


def training_files(filepattern: str) -> List[str]:
    """Files matching a glob, sorted; ValueError naming the pattern if none."""
    files = sorted(glob.glob(filepattern))
    if not files:
        raise ValueError(f"no training file matches the pattern {filepattern!r}")
    return files


def count_train_tokens(filepattern: str) -> int:
    """Whitespace-separated tokens in the files matching the glob: the
    trainer's `n_train_tokens`.

    Raises ValueError when no file matches, a file holds no token, or a file
    is not UTF-8 (naming the file and line).
    """
    total = 0
    for path in training_files(filepattern):
        n_tokens = sum(len(tokens) for tokens in iter_tokenized_lines(path))
        if n_tokens == 0:
            raise ValueError(f"training file {path} contains no tokens")
        total += n_tokens
    return total


def count_tokens(filepattern: str) -> Tuple[collections.Counter, int]:
    """Count every token of the files matching `filepattern`.

    Returns (counts per token, total number of tokens). The total is what
    the trainer's `n_train_tokens` should be (sentence boundaries excluded,
    as the original's 1B-word figure).
    """
    counts = collections.Counter()
    for path in training_files(filepattern):
        for tokens in iter_tokenized_lines(path):
            counts.update(tokens)
    return counts, sum(counts.values())


def vocabulary_from_counts(counts: collections.Counter, min_count: int = 1,
                           max_size: Optional[int] = None) -> List[str]:
    """Vocabulary list: the special tokens first, then tokens by descending
    count, ties in code-point order (so the same corpus always gives the
    same file). `max_size` counts the special tokens too."""
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    if max_size is not None and max_size < len(SPECIAL_TOKENS):
        raise ValueError(f"max_size must be >= {len(SPECIAL_TOKENS)} "
                         f"(the special tokens), got {max_size}")
    words = sorted((token for token, count in counts.items()
                    if count >= min_count and token not in SPECIAL_TOKENS),
                   key=lambda token: (-counts[token], token))
    vocabulary = list(SPECIAL_TOKENS) + words
    return vocabulary if max_size is None else vocabulary[:max_size]


def write_lines(lines: Iterable[str], path: str) -> None:
    """Write one item per line as UTF-8, atomically (temporary name, rename)."""
    with atomic_output(path) as tmp_path, \
            open(tmp_path, "w", encoding="utf-8", newline="\n") as fout:
        for line in lines:
            fout.write(line + "\n")


def build_vocabulary(filepattern: str, vocab_file: str, min_count: int = 1,
                     max_size: Optional[int] = None) -> Tuple[int, int]:
    """Count the corpus, write `vocab_file`; return (vocabulary size, tokens)."""
    counts, n_tokens = count_tokens(filepattern)
    vocabulary = vocabulary_from_counts(counts, min_count, max_size)
    write_lines(vocabulary, vocab_file)
    return len(vocabulary), n_tokens


def split_corpus(input_file: str, output_dir: str, n_shards: int,
                 heldout_fraction: float = 0.01, seed: int = 0) -> Tuple[List[str], str]:
    """Shuffle the non-empty lines of `input_file` into `n_shards` training
    files plus one heldout file, as the training instructions require.

    Returns (shard paths, heldout path): output_dir/train-0000N-of-0000M.txt
    and output_dir/heldout.txt.
    """
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    sentences = [" ".join(tokens) for tokens in iter_tokenized_lines(input_file) if tokens]
    if not sentences:
        raise ValueError(f"{input_file} holds no tokens")
    random.Random(seed).shuffle(sentences)
    n_heldout = int(round(len(sentences) * heldout_fraction))
    heldout, train = sentences[:n_heldout], sentences[n_heldout:]
    if len(train) < n_shards:
        raise ValueError(f"{input_file}: {len(train)} training sentences cannot "
                         f"fill {n_shards} shards")
    os.makedirs(output_dir, exist_ok=True)
    shard_paths = []
    for k in range(n_shards):
        path = os.path.join(output_dir, f"train-{k + 1:05d}-of-{n_shards:05d}.txt")
        write_lines(train[k::n_shards], path)
        shard_paths.append(path)
    heldout_path = os.path.join(output_dir, "heldout.txt")
    write_lines(heldout, heldout_path)
    return shard_paths, heldout_path
