"""Extract an English corpus from GCIDE's definitions, usage notes and quotations.

    apt-get install dict-gcide
    python scripts/gcide_corpus.py /usr/share/dictd/gcide.dict.dz corpus.txt [--mixed_style]

GCIDE (the GNU Collaborative International Dictionary of English: Webster's
1913 with later additions) is free software under the GNU GPL, version 2 or
later. The dictionary file is dictzip, which gzip reads. Entries are blocks of
indented paragraphs under an unindented headword line; this keeps the prose of
each paragraph, one sentence per line, tokenized like scripts/wordnet_corpus.py,
and drops what is not running text: headwords, pronunciations, etymologies and
other [bracketed] editorial notes, source markers such as [1913 Webster],
quotation authors (--Shak.), field labels such as (Zool.) and synonym lists.
"""
import gzip
import re
from typing import Iterator, List

from wordnet_corpus import corpus_arguments, write_sentences

ENTRY_START = re.compile(r"^\S")
AUTHOR = re.compile(r"\s--\S.*$")                      # "  --Shak." to end of line
RIGHT_ALIGNED = re.compile(r"^\s{30,}\S")              # an author's wrapped tail
HEADWORD = re.compile(r"^(?:[^\\]*\\[^\\]*\\\s*(?:\([^)]*\))?\s*,?\s*)+"   # Bank \Bank\ (pron),
                      r"(?:(?:[a-z]{1,5}\.|&)\s*,?\s*)*")                # n. / v. t. / imp. & p. p.
MARK = "\"`'^~.,=:"
ACCENT = re.compile(rf"\[([{MARK}]?[a-z]{{1,4}}[{MARK}]?|[{MARK}][A-Z]|[A-Z][\"`'^~=:])\]")  # [e^] ["A]
BRACKETS = re.compile(r"\[[^\[\]]*\]")
FIELD_LABEL = re.compile(r"\((?:[A-Z][A-Za-z\"`'^\[\]]*\.?\s*(?:&\s*)?)+\)")  # (Zool.), (Law)
ENUMERATION = re.compile(r"^(?:\d+\.|\([a-z]\)|\s)+")
DERIVED_FORM = re.compile(r"--\s*[^\s,]*[*\"][^\s,]*,(?:\s*[a-z]+\.)+")  # -- Boot"less*ly, adv.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
DROPPED_PARAGRAPHS = ("Syn:", "Note:", "Pron:")


def _letter(match: re.Match) -> str:
    """An accented letter written as [e^] or ["a] -> e, a; [ae] -> ae."""
    letters = re.sub(r"[^A-Za-z]", "", match.group(1))
    if len(letters) > 2:   # [imac], [deg]: a letter plus the name of its mark
        letters = letters[:1]
    return letters


def paragraphs(text: str) -> Iterator[List[str]]:
    """Blank-line separated blocks of lines."""
    block: List[str] = []
    for line in text.split("\n"):
        if line.strip():
            block.append(line)
        elif block:
            yield block
            block = []
    if block:
        yield block


def paragraph_prose(lines: List[str]) -> str:
    """The running text of one paragraph, or '' when it holds none."""
    kept = [AUTHOR.sub("", line) for line in lines if not RIGHT_ALIGNED.match(line)]
    text = " ".join(line.strip() for line in kept)
    if ENTRY_START.match(lines[0]):
        text = HEADWORD.sub("", text, count=1)
    text = ACCENT.sub(_letter, text)
    while BRACKETS.search(text):          # etymologies nest: [L. x [fr. y]]
        text = BRACKETS.sub(" ", text)
    text = FIELD_LABEL.sub(" ", text)
    text = DERIVED_FORM.sub(" ", text)
    text = text.replace("{", "").replace("}", "")
    text = ENUMERATION.sub("", text.strip())
    if text.startswith(DROPPED_PARAGRAPHS):
        return ""
    if text.startswith("Usage:"):
        text = text[len("Usage:"):]
    return " ".join(text.split())


def main(dict_file: str, out_file: str, mixed_style: bool = False) -> None:
    with gzip.open(dict_file, "rt", encoding="utf-8", errors="replace") as fin:
        text = fin.read()
    start = text.find("\nA \\A\\")      # the first headword; before it, file notes
    if start < 0:
        raise SystemExit(f"{dict_file}: no entry 'A \\A\\' found; is this GCIDE?")
    write_sentences(gcide_sentences(text[start:]), out_file, 0 if mixed_style else None)


def gcide_sentences(text: str) -> Iterator[str]:
    for block in paragraphs(text):
        if block[0].startswith("00-database") or "GNU General Public" in block[0]:
            continue
        for sentence in SENTENCE_END.split(paragraph_prose(block)):
            if "*" not in sentence and "\\" not in sentence:  # else a missed pronunciation
                yield ENUMERATION.sub("", sentence)


if __name__ == "__main__":
    args = corpus_arguments(__doc__, "gcide.dict.dz of Debian's dict-gcide")
    main(args.source, args.out_file, args.mixed_style)
