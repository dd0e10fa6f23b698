"""The demo of the README's first command runs on the bundled model, and
gives the figures the README quotes."""
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from bilm.default_model import OPTIONS_FILE
from bilm.demo import WORDS, nearest_neighbours, run_demo, word_occurrences
from bilm.embedder import Embedder
from bilm.options import load_and_validate
from bilm.weights import write_random_weights

ROOT = Path(__file__).resolve().parents[1]

# README, "The bundled model and the demo": same-sense nearest neighbours out
# of 30, per LSTM layer, for the bundled model and a random-weight model
# (bin/random_weights.py --seed 0) of the same size. Chance is 12.
BUNDLED_TOTALS = {1: 14, 2: 16}
RANDOM_SEED_0_TOTALS = {1: 7, 2: 7}


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
    assert totals == BUNDLED_TOTALS
    printed = out.getvalue()
    assert "bank     river / money      3/6      3/6" in printed
    assert "all                         14/30    16/30     (chance: 12/30)" in printed


def test_random_weights_do_worse(tmp_path):
    weight_file = str(tmp_path / "random.hdf5")
    write_random_weights(load_and_validate(OPTIONS_FILE), weight_file, seed=0)
    with Embedder(OPTIONS_FILE, weight_file) as embedder:
        assert run_demo(embedder, out=io.StringIO()) == RANDOM_SEED_0_TOTALS


def test_demo_command():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "bilm", "demo"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "bank     river / money" in result.stdout
    assert "all                         14/30    16/30" in result.stdout
    assert "Nearest neighbours of 'bank' at layer 2" in result.stdout
