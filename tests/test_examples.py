"""The examples run from the repository root with no arguments."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bundled import DIM

ROOT = Path(__file__).resolve().parents[1]


def _run(args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("script,expected", [
    ("usage_character.py", [f"context ELMo input: (2, 11, {DIM})",
                            f"question ELMo input: (1, 6, {DIM})"]),
    ("usage_token.py", [f"context ELMo input: (2, 11, {DIM})",
                        f"question ELMo input: (1, 6, {DIM})"]),
    ("usage_cached.py", ["sentences embedded: 6", f"second sentence: (3, 11, {DIM})"]),
])
def test_example_runs(script, expected):
    result = _run([script])
    assert result.returncode == 0, result.stderr[-2000:]
    for line in expected:
        assert line in result.stdout


def test_data_layer_does_not_load_tensorflow():
    code = ("import sys, bilm.data; from bilm import Batcher, Vocabulary; "
            "print('tensorflow' in sys.modules)")
    result = _run(["-c", code])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
