"""Extract an English corpus from WordNet's glosses and example sentences.

    apt-get install wordnet-base
    python scripts/wordnet_corpus.py /usr/share/wordnet corpus.txt

Each gloss line "... | a definition; \"an example\"; \"another\"" gives one
sentence per definition and per example, tokenized on words and punctuation,
one sentence per line. WordNet 3.0 is (c) Princeton University under the
WordNet license (permissive, BSD-like).
"""
import os
import re
import sys
from typing import Iterable, Iterator

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


def write_sentences(sentences: Iterable[str], out_file: str) -> None:
    """Tokenize each sentence and write those of 3 tokens or more, one a line."""
    n_sentences = n_tokens = 0
    with open(out_file, "w", encoding="utf-8") as fout:
        for sentence in sentences:
            tokens = tokenize(sentence)
            if len(tokens) >= 3:
                fout.write(" ".join(tokens) + "\n")
                n_sentences += 1
                n_tokens += len(tokens)
    print(f"{n_sentences} sentences, {n_tokens} tokens -> {out_file}")


def wordnet_sentences(wordnet_dir: str) -> Iterator[str]:
    for pos in ("noun", "verb", "adj", "adv"):
        with open(os.path.join(wordnet_dir, f"data.{pos}"), encoding="latin-1") as fin:
            for line in fin:
                if line.startswith("  ") or "|" not in line:
                    continue  # license header
                yield from gloss_sentences(line.split("|", 1)[1])


def main(wordnet_dir: str, out_file: str) -> None:
    write_sentences(wordnet_sentences(wordnet_dir), out_file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
