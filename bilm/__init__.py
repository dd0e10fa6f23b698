"""bilm: ELMo's bidirectional language model on TensorFlow 2 (tf.compat.v1 graphs)."""
from .data import (Batcher, BidirectionalLMDataset, InvalidNumberOfCharacters,
                   LMDataset, TokenBatcher, UnicodeCharsVocabulary, Vocabulary)
from .elmo import weight_layers
from .model import (BidirectionalLanguageModel, dump_bilm_embeddings,
                    dump_token_embeddings)

__version__ = "0.2.0"
