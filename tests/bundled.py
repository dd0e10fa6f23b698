"""Facts about the bundled model that tests need, read from its own files,
and a small vocabulary for the dumps that run one word at a time."""
import json

from bilm.default_model import OPTIONS_FILE

with open(OPTIONS_FILE, encoding="utf-8") as _fin:
    _LSTM = json.load(_fin)["lstm"]

PROJ = _LSTM["projection_dim"]          # token vector size
DIM = 2 * PROJ                          # forward + backward
N_LAYERS = _LSTM["n_layers"] + 1        # token layer + LSTM layers
LSTM_DIM = _LSTM["dim"]

SMALL_VOCAB = ["<S>", "</S>", "<UNK>", "The", "bank", "closed", ".", "river", "?",
               "café", "日本"]


def write_small_vocab(path) -> str:
    """Write SMALL_VOCAB to `path` (a pathlib.Path); return it as str."""
    path.write_text("\n".join(SMALL_VOCAB) + "\n", encoding="utf-8")
    return str(path)
