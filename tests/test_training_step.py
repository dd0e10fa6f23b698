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
import tensorflow.compat.v1 as tf

from bilm import training

FIXTURE = Path(__file__).resolve().parent / "data" / "training_step.npz"


@pytest.fixture(scope="module")
def saved():
    import importlib.util  # the options live with the script that wrote the file
    spec = importlib.util.spec_from_file_location("make_training_step",
                                                  FIXTURE.parent / "make_training_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.OPTIONS, dict(np.load(FIXTURE))


def _group(arrays: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def test_two_steps_match_the_saved_graph(saved):
    options, arrays = saved
    before, after = _group(arrays, "before/"), _group(arrays, "after/")
    batches = [_group(arrays, f"batch{n}/") for n in range(2)]
    with tf.Graph().as_default():
        graph = training._TrainingGraph(options, 1)
        variables = {v.op.name: v for v in tf.global_variables()}
        assert sorted(variables) == sorted(before), "variable names changed"
        with tf.Session(config=tf.ConfigProto(allow_soft_placement=True)) as sess:
            sess.run(graph.init_op)
            for name, variable in variables.items():
                variable.load(before[name], sess)
            states = [np.zeros(t.shape.as_list(), np.float32)
                      for t in graph.init_state_tensors]
            perplexities = []
            for batch in batches:
                _, perplexity, states = sess.run(
                    [graph.train_op, graph.train_perplexity, graph.final_state_tensors],
                    graph.batch_feed(batch, states, options["batch_size"]))
                perplexities.append(perplexity)
            updated = dict(zip(variables, sess.run(list(variables.values()))))
    np.testing.assert_allclose(perplexities, arrays["perplexities"], rtol=1e-6)
    for n, state in enumerate(states):
        np.testing.assert_allclose(state, arrays[f"final_state/{n}"], rtol=1e-5, atol=1e-6,
                                   err_msg=f"carried LSTM state {n}")
    for name, value in updated.items():
        # compare the change of each weight, so the test sees the step, not the weights
        np.testing.assert_allclose(value - before[name], after[name] - before[name],
                                   rtol=1e-4, atol=1e-7, err_msg=name)
