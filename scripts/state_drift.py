"""How much the original's carried-over LSTM state changes a sentence's vectors.

    python scripts/state_drift.py HELDOUT_FILE [--sentences 200] \
        [--options OPTIONS --weights WEIGHTS]      # default: the bundled model

Runs the first N sentences of the file one at a time, stateful (each starts
from the state the previous one left, as the original's dump did) and
stateless (zero states), and compares the LSTM layers (layer 0 does not
depend on state): relative L2 norm of the difference per sentence, cosine
similarity per token, the largest single difference, and where it sits (the
forward direction's first token, the backward direction's last).
"""
import argparse
import os
import sys

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("heldout")
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--options")
    parser.add_argument("--weights")
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from bilm.embedder import Embedder

    with open(args.heldout, encoding="utf-8") as fin:
        sentences = [line.split() for line, _ in zip(fin, range(args.sentences))]
    vectors = {}
    for stateless in (True, False):
        with Embedder(args.options, args.weights, batch_size=1, stateless=stateless) as e:
            vectors[stateless] = [v[1:] for v in e.embed_sentences(sentences)]  # [L-1, n, D]
    relative, cosines, largest, first_fw, last_bw = [], [], [], [], []
    for carried, fresh in zip(vectors[False], vectors[True]):
        difference = carried - fresh
        relative.append(np.linalg.norm(difference) / np.linalg.norm(fresh))
        cosines.extend((np.sum(carried * fresh, -1) / (
            np.linalg.norm(carried, axis=-1) * np.linalg.norm(fresh, axis=-1) + 1e-12)).ravel())
        largest.append(np.abs(difference).max())
        half = difference.shape[-1] // 2
        first_fw.append(np.abs(difference[:, 0, :half]).max())
        last_bw.append(np.abs(difference[:, -1, half:]).max())
    print(f"{len(sentences)} sentences one at a time, stateful vs stateless, LSTM layers:")
    print(f"  relative L2 difference: median {np.median(relative):.1%}")
    print(f"  cosine similarity per token: mean {np.mean(cosines):.4f}")
    print(f"  largest single difference: {max(largest):.2f} (median per sentence "
          f"{np.median(largest):.2f})")
    print(f"  median largest difference at the forward's first token {np.median(first_fw):.2f}, "
          f"at the backward's last token {np.median(last_bw):.2f}")


if __name__ == "__main__":
    main()
