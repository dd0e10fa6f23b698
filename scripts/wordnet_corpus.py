"""Extract an English corpus from WordNet's glosses and example sentences.

    apt-get install wordnet-base
    python scripts/wordnet_corpus.py /usr/share/wordnet corpus.txt [--mixed_style]

Each gloss line "... | a definition; \"an example\"; \"another\"" gives one
sentence per definition and per example, tokenized on words and punctuation,
one sentence per line. WordNet 3.0 is (c) Princeton University under the
WordNet license (permissive, BSD-like).

--mixed_style writes every sentence in one of two styles chosen at random
(seeded): as a gloss (first word in lower case, no final period) or as prose
(first letter capital, final period). WordNet writes glosses, GCIDE prose; a
model trained on both as they are learns which source a sentence comes from
by its style, and reads gloss-style text (the demo's sentences) poorly.
"""
import argparse
import os
import random
import re
import sys
from typing import Iterable, Iterator, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bilm.corpus import write_lines  # noqa: E402

TOKEN = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+(?:[.,]\d+)*|'s|n't|[^\sA-Za-z\d]")


def tokenize(text: str) -> list:
    """Words, numbers and single punctuation marks."""
    return TOKEN.findall(text)


def gloss_sentences(gloss: str):
    """Definitions and quoted examples of one gloss, in order."""
    for part in gloss.split(";"):
        part = part.strip().strip('"').strip()
        if part:
            yield part


def restyle(tokens: List[str], prose: bool) -> List[str]:
    """The sentence as prose (capital first letter, final period) or as a
    gloss (lower-case first word unless it is all capitals, no final period)."""
    first = tokens[0]
    if prose:
        tokens = [first[:1].upper() + first[1:]] + tokens[1:]
        return tokens if tokens[-1] in (".", "?", "!") else tokens + ["."]
    if not first.isupper():
        tokens = [first[:1].lower() + first[1:]] + tokens[1:]
    return tokens[:-1] if tokens[-1] == "." and len(tokens) > 3 else tokens


def write_sentences(sentences: Iterable[str], out_file: str,
                    mixed_style_seed: Optional[int] = None) -> None:
    """Tokenize each sentence and write those of 3 tokens or more, one a line
    (the file appears only when complete); with a seed, each in a style drawn
    at random (`restyle`)."""
    rng = random.Random(mixed_style_seed)
    counts = {"sentences": 0, "tokens": 0}

    def lines() -> Iterator[str]:
        for sentence in sentences:
            tokens = tokenize(sentence)
            if len(tokens) >= 3:
                if mixed_style_seed is not None:
                    tokens = restyle(tokens, prose=rng.random() < 0.5)
                counts["sentences"] += 1
                counts["tokens"] += len(tokens)
                yield " ".join(tokens)
    write_lines(lines(), out_file)
    print(f"{counts['sentences']} sentences, {counts['tokens']} tokens -> {out_file}")


def synset_lines(wordnet_dir: str) -> Iterator[Tuple[str, str]]:
    """(part of speech, line) for every synset line of WordNet's data files."""
    for pos in ("noun", "verb", "adj", "adv"):
        with open(os.path.join(wordnet_dir, f"data.{pos}"), encoding="latin-1") as fin:
            for line in fin:
                if not line.startswith("  ") and "|" in line:  # else the license header
                    yield pos, line


def wordnet_sentences(wordnet_dir: str) -> Iterator[str]:
    for _, line in synset_lines(wordnet_dir):
        yield from gloss_sentences(line.split("|", 1)[1])


def corpus_arguments(description: str, source: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help=source)
    parser.add_argument("out_file")
    parser.add_argument("--mixed_style", action="store_true",
                        help="each sentence as a gloss or as prose, at random (seed 0)")
    return parser.parse_args()


def main(wordnet_dir: str, out_file: str, mixed_style: bool = False) -> None:
    write_sentences(wordnet_sentences(wordnet_dir), out_file, 0 if mixed_style else None)


if __name__ == "__main__":
    args = corpus_arguments(__doc__, "WordNet's dict folder (data.noun, ...)")
    main(args.source, args.out_file, args.mixed_style)
