"""Checkpoints: the original's names, restoring, and weights for inference.

Checkpoints of TF < 1.2 named the LSTM cell's variables `weights`/`biases`;
every restore here accepts those names too. `dump_weights` writes the hdf5
file that `BidirectionalLanguageModel` reads.
"""
import json
import logging
import os
import re
from typing import Dict, Iterable, Optional, Tuple

import h5py
import numpy as np
import tensorflow.compat.v1 as tf

from .files import atomic_output
from .lm_graph import LanguageModel, inference_options, validate_training_options
from .options import load_options
from .weights import checkpoint_variable_to_hdf5

logger = logging.getLogger(__name__)


_OLD_CELL_NAMES = ((re.compile(r"(lstm_cell/(?:projection/)?)kernel(?=/|$)"), r"\1weights"),
                   (re.compile(r"(lstm_cell/)bias(?=/|$)"), r"\1biases"))
# restored when present, left at its initial value when not (it is only a
# bookkeeping variable of the original)
_OPTIONAL_CHECKPOINT_VARIABLES = ("train_perplexity",)


def _old_cell_name(name: str) -> str:
    """'.../lstm_cell/kernel/Adagrad' -> '.../lstm_cell/weights/Adagrad' (TF < 1.2)."""
    for pattern, replacement in _OLD_CELL_NAMES:
        name = pattern.sub(replacement, name)
    return name


def checkpoint_name_map(ckpt_file: str, variables: Iterable[tf.Variable]
                        ) -> Dict[str, tf.Variable]:
    """{name in the checkpoint: graph variable} for restoring `variables`.

    A variable is found under its own name or under its TF < 1.2 LSTM name
    (weights/biases for kernel/bias).
    Raises:
      ValueError listing variables the checkpoint lacks or holds with
      another shape (e.g. options.json does not match the checkpoint).
    """
    try:
        available = dict(tf.train.list_variables(ckpt_file))
    except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as err:
        raise ValueError(f"cannot read checkpoint {ckpt_file}: {err}") from None
    name_map, missing, mismatched = {}, [], []
    for variable in variables:
        name = re.sub(r":0$", "", variable.name)
        candidates = [n for n in (name, _old_cell_name(name)) if n in available]
        if not candidates:
            if name not in _OPTIONAL_CHECKPOINT_VARIABLES:
                missing.append(name)
            continue
        stored_name = candidates[0]
        shape = variable.shape.as_list()
        if list(available[stored_name]) != shape:
            mismatched.append(f"{stored_name}: checkpoint {list(available[stored_name])}, "
                              f"graph {shape}")
            continue
        name_map[stored_name] = variable
    problems = []
    if missing:
        problems.append(f"{len(missing)} variable(s) missing: " + ", ".join(missing[:8])
                        + (" ..." if len(missing) > 8 else ""))
    if mismatched:
        problems.append("shape mismatch: " + "; ".join(mismatched[:8])
                        + (" ..." if len(mismatched) > 8 else ""))
    if problems:
        raise ValueError(f"checkpoint {ckpt_file} does not match the model built from "
                         "options.json: " + ". ".join(problems))
    return name_map


def restore_checkpoint(sess: tf.Session, ckpt_file: str,
                       variables: Optional[Iterable[tf.Variable]] = None) -> None:
    """Restore `variables` (default: all global variables) from `ckpt_file`,
    accepting the old LSTM names (see `checkpoint_name_map`)."""
    if variables is None:
        variables = tf.global_variables()
    name_map = checkpoint_name_map(ckpt_file, variables)
    tf.train.Saver(name_map).restore(sess, ckpt_file)


def load_options_latest_checkpoint(tf_save_dir: str) -> Tuple[dict, str]:
    """(options of tf_save_dir/options.json, path of its latest checkpoint).

    Raises:
      FileNotFoundError when the directory has no options.json or no checkpoint.
    """
    options_file = os.path.join(tf_save_dir, "options.json")
    if not os.path.isfile(options_file):
        raise FileNotFoundError(f"no options.json in {tf_save_dir}: not a training "
                                "save directory (see bin/train_elmo.py --save_dir)")
    options = load_options(options_file)
    ckpt_file = tf.train.latest_checkpoint(tf_save_dir)
    if ckpt_file is None:
        raise FileNotFoundError(f"no checkpoint in {tf_save_dir}: its 'checkpoint' "
                                "file is missing or lists no model.ckpt-N")
    return options, ckpt_file


def _write_json(path: str, obj: dict) -> None:
    with atomic_output(path) as tmp_file, open(tmp_file, "w", encoding="utf-8") as fout:
        json.dump(obj, fout, indent=2)


def dump_weights(tf_save_dir: str, outfile: str, options_outfile: Optional[str] = None,
                 include_softmax: bool = False) -> None:
    """Write the latest checkpoint of `tf_save_dir` as an inference weight hdf5.

    Every trainable variable except the softmax is written under its hdf5
    name (SPEC §1): char_embed keeps its 261 rows (inference prepends the
    zero row), a word model's `embedding` keeps n_tokens_vocab rows (row k
    is vocabulary id k).

    Args:
      tf_save_dir: training directory (options.json + checkpoints).
      outfile: the weight hdf5 to write (replaced atomically).
      options_outfile: if given, also write there the inference options.json
        (n_characters 262) that loads `outfile` in BidirectionalLanguageModel.
      include_softmax: also write 'softmax/W' [n_tokens_vocab, proj] (the
        embedding when it is shared) and 'softmax/b'.
    """
    options, ckpt_file = load_options_latest_checkpoint(tf_save_dir)
    source = os.path.join(tf_save_dir, "options.json")
    options = validate_training_options(options, source, is_training=False)
    if options_outfile is not None and os.path.abspath(options_outfile) == \
            os.path.abspath(source):
        raise ValueError(f"options_outfile {options_outfile} would overwrite the "
                         "training options.json (n_characters 261); choose another path")
    with tf.Graph().as_default():
        with tf.variable_scope("lm"):
            model = LanguageModel(options, False)
        with tf.Session(config=tf.ConfigProto(allow_soft_placement=True)) as sess:
            restore_checkpoint(sess, ckpt_file)
            values = {}
            for variable in tf.trainable_variables():
                name = re.sub(r":0$", "", variable.name)
                if "softmax" in name and not include_softmax:
                    continue
                values[checkpoint_variable_to_hdf5(name)] = sess.run(variable)
            if include_softmax and model.share_embedding_softmax:
                values["softmax/W"] = sess.run(model.softmax_W)

    for path in (outfile, options_outfile):  # e.g. `--outfile model/weights.hdf5`
        if path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_output(outfile) as tmp_file, h5py.File(tmp_file, "w") as fout:
        for name in sorted(values):
            logger.info("Saving %s %s", name, list(values[name].shape))
            fout.create_dataset(name, data=values[name].astype(np.float32))
    logger.info("wrote %s from %s", outfile, ckpt_file)

    if options_outfile is not None:
        if not options.get("bidirectional", False):
            logger.warning("%s is unidirectional: BidirectionalLanguageModel needs "
                           "both directions and will not load %s", tf_save_dir, outfile)
        _write_json(options_outfile, inference_options(options))
        logger.info("wrote the inference options %s%s", options_outfile,
                    "" if "char_cnn" in options else
                    " (word input: use use_character_inputs=False and token ids)")
