"""The model bundled with the package, used when no model is given.

A small biLM trained by this project on WordNet 3.0's glosses and example
sentences (1.49M training tokens), reproducible with
`scripts/train_default_model.sh`: character input, 2 LSTM layers of 320
units projected to 80, skip connections, 8 epochs; heldout perplexity 108
(unigram baseline 743). Small enough to ship (4.4 MB); for real work use a released
ELMo model or train your own.
"""
import os

DEFAULT_MODEL_DIR = os.path.dirname(os.path.abspath(__file__))
OPTIONS_FILE = os.path.join(DEFAULT_MODEL_DIR, "options.json")
WEIGHT_FILE = os.path.join(DEFAULT_MODEL_DIR, "weights.hdf5")
VOCAB_FILE = os.path.join(DEFAULT_MODEL_DIR, "vocab.txt")
