"""bilm: ELMo's bidirectional language model on TensorFlow 2 (tf.compat.v1 graphs).

The data layer (`Vocabulary`, `Batcher`, ...) needs only NumPy; the names
that build TensorFlow graphs are imported on first use, so `import bilm.data`
or `from bilm import Batcher` does not load TensorFlow.
"""
import importlib

from .data import (Batcher, BidirectionalLMDataset, InvalidNumberOfCharacters,
                   LMDataset, TokenBatcher, UnicodeCharsVocabulary, Vocabulary)

__version__ = "0.2.0"

_LAZY = {
    "BidirectionalLanguageModel": "model",
    "dump_token_embeddings": "model",
    "dump_bilm_embeddings": "model",
    "weight_layers": "elmo",
    "Embedder": "embedder",
}

__all__ = ["Batcher", "BidirectionalLMDataset", "InvalidNumberOfCharacters",
           "LMDataset", "TokenBatcher", "UnicodeCharsVocabulary", "Vocabulary",
           *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'bilm' has no attribute {name!r}")
