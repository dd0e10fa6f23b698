"""The demo of the README's first command runs on the bundled model."""
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from bilm.demo import WORDS, nearest_neighbours, run_demo, word_occurrences
from bilm.embedder import Embedder

ROOT = Path(__file__).resolve().parents[1]


def test_occurrences_and_neighbours():
    with Embedder() as embedder:
        occurrences = word_occurrences(embedder)
        out = io.StringIO()
        totals = run_demo(embedder, out=out)
    assert len(occurrences) == len(WORDS)
    for item, word_occurrences_ in zip(WORDS, occurrences):
        assert len(word_occurrences_) == sum(len(s) for s in item.senses.values())
        layer0 = np.stack([o.vectors[0] for o in word_occurrences_])
        np.testing.assert_allclose(layer0, layer0[:1].repeat(len(layer0), 0), atol=1e-6)
        top = np.stack([o.vectors[-1] for o in word_occurrences_])
        assert np.abs(top - top[:1]).max() > 1e-3  # the LSTM layers see the sentence
        neighbours = nearest_neighbours(word_occurrences_, layer=2)
        assert all(j != i for i, j in enumerate(neighbours))
    n_total = sum(len(o) for o in occurrences)
    assert f"{totals[2]}/{n_total}" in out.getvalue()


def test_demo_command():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "bilm", "demo"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "bank     river / money" in result.stdout
    assert "Nearest neighbours of 'bank' at layer 2" in result.stdout
