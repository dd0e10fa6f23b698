"""The model bundled with the package, used when no model is given.

For now a fixed-seed random model written by `bin/random_weights.py`
(seed 0): its vectors have the right shapes and behaviour (context changes
them, padding is zero) but carry no linguistic meaning.
"""
import os

DEFAULT_MODEL_DIR = os.path.dirname(os.path.abspath(__file__))
OPTIONS_FILE = os.path.join(DEFAULT_MODEL_DIR, "options.json")
WEIGHT_FILE = os.path.join(DEFAULT_MODEL_DIR, "weights.hdf5")
VOCAB_FILE = os.path.join(DEFAULT_MODEL_DIR, "vocab.txt")
