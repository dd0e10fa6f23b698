"""A word-sense test larger than `bilm demo`: nearest sense centroid on WordNet.

    python scripts/sense_test.py --wordnet_dir /usr/share/wordnet \
        --heldout data/wordnet/heldout.txt --train_prefix 'data/*/train-*' \
        [--options OPTIONS --weights WEIGHTS --vocab VOCAB]   # default: bundled

WordNet's quoted examples are sentences labelled with a sense: the example
"they pulled the canoe up on the bank" belongs to the synset of bank (sloping
land). Every example that contains one of its synset's one-word lemmas is an
occurrence (lemma, synset, sentence). Examples in the heldout file (text the
model never trained on; any sentence that also occurs in a training file is
dropped) are the queries; all other examples are references. For a lemma
whose references cover two or more of its senses, each query is given the
sense whose mean reference vector (per biLM layer) is nearest by cosine, as
the ELMo paper's nearest-neighbour word-sense test did on SemCor. Layer 0 gives
every occurrence of a word the same vector, so the best it can do is one sense
per word: its score is the most frequent sense among the references.
"""
import argparse
import glob
import os
import re
import sys
from collections import Counter, defaultdict
from typing import Dict, Iterator, List, NamedTuple, Sequence, Set, Tuple

import numpy as np

from wordnet_corpus import synset_lines, tokenize

QUOTED = re.compile(r'"([^"]+)"')


class Occurrence(NamedTuple):
    lemma: str
    sense: str          # "pos:offset" of the synset
    tokens: Tuple[str, ...]
    position: int


def synsets(wordnet_dir: str) -> Iterator[Tuple[str, List[str], List[str]]]:
    """(sense id, one-word lemmas, quoted examples) per WordNet synset."""
    for pos, line in synset_lines(wordnet_dir):
        head, gloss = line.split("|", 1)
        fields = head.split()
        n_words = int(fields[3], 16)
        words = [fields[4 + 2 * k].lower() for k in range(n_words)]
        lemmas = [w.split("(")[0] for w in words if "_" not in w]
        examples = [text.strip() for text in QUOTED.findall(gloss)]
        yield f"{pos}:{fields[0]}", lemmas, examples


def occurrences(wordnet_dir: str) -> List[Occurrence]:
    """Every example with the position of its synset's lemma (first match)."""
    found = []
    for sense, lemmas, examples in synsets(wordnet_dir):
        for example in examples:
            tokens = tuple(tokenize(example))
            lowered = [t.lower() for t in tokens]
            for lemma in lemmas:
                if lemma in lowered:
                    found.append(Occurrence(lemma, sense, tokens, lowered.index(lemma)))
                    break
    return found


def split_queries(found: Sequence[Occurrence], heldout: Set[str], trained: Set[str]
                  ) -> Tuple[List[Occurrence], List[Occurrence]]:
    """(queries, references): queries are heldout examples of lemmas whose
    references hold the query's sense and at least one other sense."""
    references = [o for o in found if " ".join(o.tokens) not in heldout]
    senses: Dict[str, Set[str]] = defaultdict(set)
    for o in references:
        senses[o.lemma].add(o.sense)
    queries = [o for o in found
               if " ".join(o.tokens) in heldout and " ".join(o.tokens) not in trained
               and len(senses[o.lemma]) >= 2 and o.sense in senses[o.lemma]]
    lemmas = {o.lemma for o in queries}
    return queries, [o for o in references if o.lemma in lemmas]


def layer_vectors(embedder, items: Sequence[Occurrence]) -> np.ndarray:
    """[n_items, n_layers, dim]: each occurrence's vector per biLM layer."""
    vectors = embedder.embed_sentences([list(o.tokens) for o in items], layers="all")
    return np.stack([v[:, o.position] for o, v in zip(items, vectors)])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


def _senses_by_lemma(items: Sequence[Occurrence]) -> Dict[str, Dict[str, List[int]]]:
    """{lemma: {sense: indices into items}}."""
    by_lemma: Dict[str, Dict[str, List[int]]] = defaultdict(lambda: defaultdict(list))
    for k, o in enumerate(items):
        by_lemma[o.lemma][o.sense].append(k)
    return by_lemma


def nearest_centroid_accuracy(queries, query_vectors, references, reference_vectors
                              ) -> List[float]:
    """Per layer, the fraction of queries given their own sense."""
    by_lemma = _senses_by_lemma(references)
    correct = np.zeros(query_vectors.shape[1])
    for q, o in enumerate(queries):
        senses = sorted(by_lemma[o.lemma])
        centroids = np.stack([_unit(reference_vectors[by_lemma[o.lemma][s]]).mean(axis=0)
                              for s in senses])                      # [S, L, D]
        scores = np.einsum("sld,ld->sl", _unit(centroids), _unit(query_vectors[q]))
        correct += np.array([senses[k] == o.sense for k in scores.argmax(axis=0)])
    return list(correct / len(queries))


def leave_one_out_accuracy(found: Sequence[Occurrence], vectors: np.ndarray
                           ) -> Tuple[int, List[float], float]:
    """Every occurrence against the sense centroids of the others of its word
    (its own vector taken out of its sense's mean); only occurrences whose
    word keeps two or more senses without them count. Returns (n counted,
    per-layer accuracy, most-frequent-sense accuracy of the others)."""
    unit = _unit(vectors)
    correct = np.zeros(vectors.shape[1])
    frequent = counted = 0
    for senses in _senses_by_lemma(found).values():
        names = sorted(senses)
        sums = np.stack([unit[senses[s]].sum(axis=0) for s in names])     # [S, L, D]
        sizes = np.array([len(senses[s]) for s in names], dtype=float)
        for own, name in enumerate(names):
            for k in senses[name]:
                left = sizes.copy()
                left[own] -= 1
                if (left > 0).sum() < 2 or left[own] == 0:
                    continue
                sums_k = sums.copy()
                sums_k[own] -= unit[k]
                scores = np.einsum("sld,ld->sl", sums_k, unit[k]) / np.sqrt(
                    np.einsum("sld,sld->sl", sums_k, sums_k) + 1e-12)
                scores[left == 0] = -np.inf
                correct += scores.argmax(axis=0) == own
                frequent += int(np.argmax(left) == own)
                counted += 1
    return counted, list(correct / counted), frequent / counted


def most_frequent_sense_accuracy(queries, references) -> float:
    counts: Dict[str, Counter] = defaultdict(Counter)
    for o in references:
        counts[o.lemma][o.sense] += 1
    return float(np.mean([counts[o.lemma].most_common(1)[0][0] == o.sense
                          for o in queries]))


def read_lines(paths: Sequence[str]) -> Set[str]:
    lines: Set[str] = set()
    for path in paths:
        with open(path, encoding="utf-8") as fin:
            lines.update(line.strip() for line in fin)
    return lines


def main(argv=None) -> Dict[str, List[float]]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wordnet_dir", default="/usr/share/wordnet")
    parser.add_argument("--heldout", required=True)
    parser.add_argument("--train_prefix", required=True)
    parser.add_argument("--options")
    parser.add_argument("--weights")
    parser.add_argument("--vocab")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from bilm.embedder import Embedder

    train_files = sorted(glob.glob(args.train_prefix))
    if not train_files:
        raise SystemExit(f"--train_prefix {args.train_prefix!r} matches no file")
    every = occurrences(args.wordnet_dir)
    heldout, trained = read_lines([args.heldout]), read_lines(train_files)
    queries, references = split_queries(every, heldout, trained)
    n_senses: Dict[str, Set[str]] = defaultdict(set)
    for o in every:
        n_senses[o.lemma].add(o.sense)
    ambiguous = [o for o in every if len(n_senses[o.lemma]) >= 2]
    with Embedder(args.options, args.weights, args.vocab) as embedder:
        vectors = layer_vectors(embedder, ambiguous)
    # queries and references are occurrences of ambiguous words: look them up
    index = {o: k for k, o in enumerate(ambiguous)}
    scores = nearest_centroid_accuracy(queries, vectors[[index[o] for o in queries]],
                                       references, vectors[[index[o] for o in references]])
    baseline = most_frequent_sense_accuracy(queries, references)
    n_counted, all_scores, all_baseline = leave_one_out_accuracy(ambiguous, vectors)
    results = {"heldout": [baseline] + scores[1:], "all": [all_baseline] + all_scores[1:]}
    print(f"heldout: {len(queries)} unseen examples of {len({o.lemma for o in queries})} "
          f"words against {len(references)} references")
    print(f"all: {n_counted} examples of {len({o.lemma for o in ambiguous})} ambiguous "
          f"words, each against the others (leave one out)")
    print(f"{'':<44}{'heldout':>8}{'all':>8}")
    for layer, (a, b) in enumerate(zip(results["heldout"], results["all"])):
        name = ("layer 0 (context-free: most frequent sense)" if layer == 0
                else f"layer {layer}")
        print(f"{name:<44}{a:>8.3f}{b:>8.3f}")
    return results


if __name__ == "__main__":
    main()
