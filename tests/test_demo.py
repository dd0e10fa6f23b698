"""The demo of the README's first command runs on the bundled model."""
import io
import os
import subprocess
import sys
from pathlib import Path

from bilm.demo import CASES, run_demo, sense_similarities
from bilm.embedder import Embedder

ROOT = Path(__file__).resolve().parents[1]


def test_similarities_have_one_row_per_layer():
    with Embedder() as embedder:
        tables = sense_similarities(embedder)
        out = io.StringIO()
        right = run_demo(embedder, out=out)
    assert len(tables) == len(CASES)
    for table in tables:
        assert table.shape == (embedder.n_layers, 2)
        # layer 0 is context-free: the same word has the same vector
        assert abs(table[0, 0] - 1.0) < 1e-5 and abs(table[0, 1] - 1.0) < 1e-5
        # the LSTM layers see the sentence
        assert (table[1:] < 1.0 - 1e-4).all()
    assert f"in {right} of {len(CASES)} cases" in out.getvalue()


def test_demo_command():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "bilm.cli", "demo"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "'bank'  probe:" in result.stdout
    assert "layer 2: same" in result.stdout
