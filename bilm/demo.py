"""A short demonstration that ELMo vectors depend on context.

For a few ambiguous words, the vector of the word in a probe sentence is
compared (cosine similarity) with its vectors in two reference sentences,
one per sense, layer by layer. Layer 0 is context-free, so both similarities
are 1.0 there; the LSTM layers see the sentence and should side with the
reference of the same sense.
"""
from typing import List, NamedTuple, Optional, Sequence

import numpy as np


class SenseCase(NamedTuple):
    word: str
    probe: str
    same_sense: str       # a sentence using the word in the probe's sense
    other_sense: str      # a sentence using the word in another sense


CASES = (
    SenseCase("bank", "they fished from the grassy bank of the river",
              "sloping land beside a body of water such as the bank of a stream",
              "a financial institution such as a bank that accepts deposits"),
    SenseCase("plant", "a flowering plant that grows in wet soil",
              "a small plant with green leaves and yellow flowers",
              "workers at the power plant produce electricity for the city"),
    SenseCase("bass", "he plays the bass in a jazz band",
              "the lowest part of the musical range played by a bass guitar",
              "a freshwater bass is a fish caught for food and sport"),
    SenseCase("court", "the judge entered the court and the trial began",
              "a court of law where a judge hears cases",
              "a tennis court is a flat area marked for playing a game"),
)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def _word_vectors(vectors: np.ndarray, tokens: Sequence[str], word: str) -> np.ndarray:
    """[n_layers, dim] vectors of the first occurrence of `word`."""
    return vectors[:, tokens.index(word), :]


def sense_similarities(embedder, cases: Sequence[SenseCase] = CASES) -> List[np.ndarray]:
    """Per case, an array [n_layers, 2]: cosine of the probe's word vector
    with the same-sense and the other-sense reference, per layer."""
    sentences = [s.split() for case in cases
                 for s in (case.probe, case.same_sense, case.other_sense)]
    vectors = embedder.embed_sentences(sentences, layers="all")
    results = []
    for k, case in enumerate(cases):
        probe, same, other = (
            _word_vectors(vectors[3 * k + i], sentences[3 * k + i], case.word)
            for i in range(3))
        results.append(np.array([[_cosine(p, s), _cosine(p, o)]
                                 for p, s, o in zip(probe, same, other)]))
    return results


def run_demo(embedder, cases: Sequence[SenseCase] = CASES, out=None) -> int:
    """Print the table; return how many cases the top layer gets right."""
    import sys
    out = out or sys.stdout
    similarities = sense_similarities(embedder, cases)
    n_layers = similarities[0].shape[0]
    print("Same word, different sentences: cosine similarity of the word's vector\n"
          "in the probe sentence with its vector in a same-sense and an\n"
          "other-sense sentence, per layer (layer 0 = context-free).\n", file=out)
    right = 0
    for case, table in zip(cases, similarities):
        print(f"'{case.word}'  probe: {case.probe}", file=out)
        print(f"    same sense : {case.same_sense}", file=out)
        print(f"    other sense: {case.other_sense}", file=out)
        for layer in range(n_layers):
            same, other = table[layer]
            verdict = "" if layer == 0 else ("  <- same sense closer" if same > other
                                             else "  <- other sense closer")
            print(f"    layer {layer}: same {same:+.3f}  other {other:+.3f}{verdict}",
                  file=out)
        right += int(table[-1, 0] > table[-1, 1])
        print(file=out)
    print(f"Top layer sides with the probe's sense in {right} of {len(cases)} cases.",
          file=out)
    return right


def main(options_file: Optional[str] = None, weight_file: Optional[str] = None,
         vocab_file: Optional[str] = None) -> int:
    from .embedder import Embedder
    with Embedder(options_file, weight_file, vocab_file) as embedder:
        return run_demo(embedder)
