"""Precompute ELMo layers for a whole dataset and store them in hdf5.

Each line of the dataset file is one tokenized sentence; dataset str(i)
of the output holds line i: [n_layers + 1, n_tokens, 2 * projection_dim].
Runs from the repository root with no arguments.
"""
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import h5py  # noqa: E402

from bilm import dump_bilm_embeddings  # noqa: E402
from bilm.default_model import OPTIONS_FILE, VOCAB_FILE, WEIGHT_FILE  # noqa: E402

dataset_file = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "examples", "sentences.txt")
embedding_file = os.path.join(tempfile.mkdtemp(), "elmo_embeddings.hdf5")

dump_bilm_embeddings(VOCAB_FILE, dataset_file, OPTIONS_FILE, WEIGHT_FILE,
                     embedding_file)

with h5py.File(embedding_file, "r") as fin:
    print("sentences embedded:", len(fin))
    second_sentence_embeddings = fin["1"][...]
print("second sentence:", second_sentence_embeddings.shape,
      "(layers, tokens, dims)")
