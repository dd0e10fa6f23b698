"""One training step of today's graph against a step saved before the graph
was reworked for speed (tests/data/training_step.npz, written by
tests/data/make_training_step.py at commit 51bb01b).

Same weights, same two batches (LSTM states carried from the first to the
second), deterministic step (dropout 0, full softmax): the updated weights,
Adagrad accumulators, perplexities and carried states must agree to float
rounding. Clipping (cell, projection) is active, tokens repeat inside a
batch, and both directions share the char CNN.
"""
from pathlib import Path

import numpy as np
import pytest

FIXTURE = Path(__file__).resolve().parent / "data" / "training_step.npz"


@pytest.fixture(scope="module")
def saved():
    import importlib.util  # the script that wrote the file runs the steps
    spec = importlib.util.spec_from_file_location("make_training_step",
                                                  FIXTURE.parent / "make_training_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, dict(np.load(FIXTURE))


def _group(arrays: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def test_two_steps_match_the_saved_graph(saved):
    module, arrays = saved
    before, after = _group(arrays, "before/"), _group(arrays, "after/")
    batches = [_group(arrays, f"batch{n}/") for n in range(2)]
    _, updated, perplexities, states = module.run_steps(batches, before)
    np.testing.assert_allclose(perplexities, arrays["perplexities"], rtol=1e-6)
    for n, state in enumerate(states):
        np.testing.assert_allclose(state, arrays[f"final_state/{n}"], rtol=1e-5, atol=1e-6,
                                   err_msg=f"carried LSTM state {n}")
    for name, value in updated.items():
        # compare the change of each weight, so the test sees the step, not the weights
        np.testing.assert_allclose(value - before[name], after[name] - before[name],
                                   rtol=1e-4, atol=1e-7, err_msg=name)
