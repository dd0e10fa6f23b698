"""A short demonstration that ELMo vectors depend on context.

Each ambiguous word appears in six sentences, three per sense. For every
occurrence, its nearest neighbour (cosine similarity) among the word's other
five occurrences is found, layer by layer; the demo counts how often the
neighbour has the same sense (chance: 2 in 5). Layer 0 is context-free: all
six vectors are identical there, so it cannot tell the senses apart.
"""
import sys
from typing import Dict, List, NamedTuple, Optional, Sequence, TextIO

import numpy as np


class AmbiguousWord(NamedTuple):
    word: str
    senses: Dict[str, Sequence[str]]   # sense label -> sentences using the word so


WORDS = (
    AmbiguousWord("bank", {
        "river": ("sloping land beside a body of water such as the bank of a river",
                  "they pulled the canoe up on the bank of the stream",
                  "the river overflowed its bank and flooded the fields"),
        "money": ("a financial institution such as a bank that accepts deposits",
                  "he borrowed money from the bank to buy a house",
                  "she deposited her salary in the bank every month")}),
    AmbiguousWord("plant", {
        "organism": ("a living organism such as a plant that grows in soil",
                     "water the plant every day so that its leaves stay green",
                     "a flowering plant with yellow flowers and small leaves"),
        "factory": ("a factory or power plant that produces electricity",
                    "workers at the chemical plant went on strike",
                    "the steel plant closed and the workers lost their jobs")}),
    AmbiguousWord("bass", {
        "music": ("the lowest part in music sung by a bass voice",
                  "he plays the bass guitar in a rock band",
                  "a bass singer with a deep voice"),
        "fish": ("any of various freshwater fish such as the bass",
                 "they caught a large bass in the lake",
                 "the bass is a lean fish with white flesh")}),
    AmbiguousWord("court", {
        "law": ("a tribunal or court of law where a judge hears cases",
                "the lawyer asked the court to dismiss the case",
                "the judge entered the court and the trial began"),
        "sport": ("a tennis court is a flat area marked for playing a game",
                  "the players ran onto the basketball court",
                  "an indoor court where squash is played")}),
    AmbiguousWord("spring", {
        "season": ("the season of growth between winter and summer is spring",
                   "flowers bloom in the spring when the weather gets warm",
                   "in early spring the snow melts"),
        "coil": ("a metal coil such as a spring that returns to its shape",
                 "the spring in the mattress was broken",
                 "a watch driven by a tightly wound spring")}),
)


class Occurrence(NamedTuple):
    sense: str
    sentence: str
    vectors: np.ndarray    # [n_layers, dim], the word's vector per layer


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


def word_occurrences(embedder, words: Sequence[AmbiguousWord] = WORDS
                     ) -> List[List[Occurrence]]:
    """Per word, its occurrences with their per-layer vectors."""
    flat = [(k, sense, sentence) for k, item in enumerate(words)
            for sense, sentences in item.senses.items() for sentence in sentences]
    vectors = embedder.embed_sentences([s.split() for _, _, s in flat], layers="all")
    result: List[List[Occurrence]] = [[] for _ in words]
    for (k, sense, sentence), sentence_vectors in zip(flat, vectors):
        position = sentence.split().index(words[k].word)
        result[k].append(Occurrence(sense, sentence, sentence_vectors[:, position]))
    return result


def nearest_neighbours(occurrences: Sequence[Occurrence], layer: int) -> List[int]:
    """For each occurrence, the index of the most similar other occurrence."""
    unit = _unit(np.stack([o.vectors[layer] for o in occurrences]))
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return [int(np.argmax(row)) for row in similarity]


def same_sense_counts(occurrences: Sequence[Occurrence]) -> List[int]:
    """Per LSTM layer (1..), how many occurrences' nearest neighbour shares
    their sense."""
    n_layers = occurrences[0].vectors.shape[0]
    counts = []
    for layer in range(1, n_layers):
        neighbours = nearest_neighbours(occurrences, layer)
        counts.append(sum(occurrences[i].sense == occurrences[j].sense
                          for i, j in enumerate(neighbours)))
    return counts


def run_demo(embedder, words: Sequence[AmbiguousWord] = WORDS,
             out: Optional[TextIO] = None) -> Dict[int, int]:
    """Print the demo; return {layer: same-sense neighbours over all words}."""
    out = out or sys.stdout
    all_occurrences = word_occurrences(embedder, words)
    n_layers = all_occurrences[0][0].vectors.shape[0]
    print("Does a word's ELMo vector know which sense it is used in?\n"
          "Each word below appears in 6 sentences, 3 per sense. For each occurrence\n"
          "we find the most similar of the other 5 (cosine) and check its sense.\n"
          "Chance is 2 in 5. Layer 0 (context-free) gives all 6 the same vector.\n",
          file=out)
    header = "  ".join(f"layer {layer}" for layer in range(1, n_layers))
    print(f"{'word':<8} {'senses':<18} {header}", file=out)
    totals = {layer: 0 for layer in range(1, n_layers)}
    n_total = 0
    for item, occurrences in zip(words, all_occurrences):
        counts = same_sense_counts(occurrences)
        n_total += len(occurrences)
        for layer, count in zip(totals, counts):
            totals[layer] += count
        cells = "  ".join(f"{count}/{len(occurrences):<5}" for count in counts)
        print(f"{item.word:<8} {' / '.join(item.senses):<18} {cells}", file=out)
    cells = "  ".join(f"{totals[layer]}/{n_total:<4}" for layer in totals)
    print(f"{'all':<8} {'':<18} {cells}   (chance: {0.4 * n_total:.0f}/{n_total})\n",
          file=out)

    example = all_occurrences[0]
    top = n_layers - 1
    print(f"Nearest neighbours of '{words[0].word}' at layer {top}:", file=out)
    for occurrence, j in zip(example, nearest_neighbours(example, top)):
        mark = "same sense" if example[j].sense == occurrence.sense else "OTHER sense"
        print(f"  {occurrence.sentence}\n      -> {example[j].sentence}  [{mark}]", file=out)
    return totals


def main(options_file: Optional[str] = None, weight_file: Optional[str] = None,
         vocab_file: Optional[str] = None) -> Dict[int, int]:
    from .embedder import Embedder
    with Embedder(options_file, weight_file, vocab_file) as embedder:
        return run_demo(embedder)
