"""Writes training_step.npz: two training steps of a tiny biLM, as computed by
the training graph of commit 51bb01b (before the graph was reworked for
speed). tests/test_training_step.py checks that today's graph computes the
same updated weights from the same weights and batches.

    python tests/data/make_training_step.py   # only to re-create the file

The model exercises every piece a step touches: char CNN (two towers'
worth of repeated tokens), highway, projection, two LSTM layers per
direction with skip connections and both clips active, and the full softmax
(dropout 0 and no sampling, so the step is deterministic).
"""
import os

import numpy as np
import tensorflow.compat.v1 as tf

from bilm import training

OPTIONS = {
    "bidirectional": True,
    "char_cnn": {"activation": "relu", "embedding": {"dim": 4},
                 "filters": [[1, 4], [2, 8], [3, 8]], "max_characters_per_token": 10,
                 "n_characters": 261, "n_highway": 1},
    "dropout": 0.0,
    "lstm": {"cell_clip": 0.2, "dim": 16, "n_layers": 2, "proj_clip": 0.1,
             "projection_dim": 8, "use_skip_connections": True},
    "all_clip_norm_val": 10.0, "n_epochs": 1, "n_train_tokens": 1000,
    "batch_size": 3, "n_tokens_vocab": 12, "unroll_steps": 5,
    "n_negative_samples_batch": 4, "sample_softmax": False,
}


def make_batches(rng: np.random.Generator, n_batches: int) -> list:
    """Batches whose tokens repeat (a 6-word vocabulary), chars unshifted as
    UnicodeCharsVocabulary gives them (258 = begin, 259 = end, 260 = pad)."""
    words = [rng.integers(0, 256, size=rng.integers(1, 8)) for _ in range(6)]

    def chars(word_ids):
        out = np.full(word_ids.shape + (10,), 260, np.int64)
        for index, word in np.ndenumerate(word_ids):
            token = words[word]
            out[index][0] = 258
            out[index][1:1 + len(token)] = token
            out[index][1 + len(token)] = 259
        return out

    batches = []
    for _ in range(n_batches):
        batch = {}
        for suffix in ("", "_reverse"):
            word_ids = rng.integers(0, 6, size=(3, 5))
            batch["token_ids" + suffix] = word_ids + 3
            batch["tokens_characters" + suffix] = chars(word_ids)
            batch["next_token_id" + suffix] = rng.integers(0, 12, size=(3, 5))
        batches.append(batch)
    return batches


def run_steps(batches: list, initial_values: dict = None):
    """Train on `batches` in order, LSTM states carried, from the graph's
    seeded initial values or from `initial_values` {variable name: array}.
    Returns (values before, values after, perplexities, final states)."""
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        graph = training._TrainingGraph(OPTIONS, 1)
        variables = {v.op.name: v for v in tf.global_variables()}
        if initial_values is not None and sorted(variables) != sorted(initial_values):
            raise ValueError("the graph's variable names differ from the saved ones")
        with tf.Session(config=tf.ConfigProto(allow_soft_placement=True)) as sess:
            sess.run(graph.init_op)
            for name, value in (initial_values or {}).items():
                variables[name].load(value, sess)
            before = dict(zip(variables, sess.run(list(variables.values()))))
            states = [np.zeros(t.shape.as_list(), np.float32)
                      for t in graph.init_state_tensors]
            perplexities = []
            for batch in batches:
                _, perplexity, states = sess.run(
                    [graph.train_op, graph.train_perplexity, graph.final_state_tensors],
                    graph.batch_feed(batch, states, OPTIONS["batch_size"]))
                perplexities.append(perplexity)
            after = dict(zip(variables, sess.run(list(variables.values()))))
    return before, after, perplexities, states


def main() -> None:
    rng = np.random.default_rng(0)
    batches = make_batches(rng, 2)
    before, after, perplexities, states = run_steps(batches)
    arrays = {f"before/{k}": v for k, v in before.items()}
    arrays.update({f"after/{k}": v for k, v in after.items()})
    for n, batch in enumerate(batches):
        arrays.update({f"batch{n}/{k}": v for k, v in batch.items()})
    arrays.update({f"final_state/{n}": s for n, s in enumerate(states)})
    arrays["perplexities"] = np.array(perplexities)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "training_step.npz")
    np.savez_compressed(out, **arrays)
    print(f"wrote {out}: perplexities {perplexities}")


if __name__ == "__main__":
    main()
