"""ELMo from token input: context-free token vectors are computed once
(dump_token_embeddings) and the biLM's LSTMs run on token ids.

Faster than character input when the vocabulary is known in advance: write a
vocabulary of every token of your dataset (as below), dump its token
embeddings once, then run on token ids; unknown tokens map to <UNK>. Runs from
the repository root with no arguments.
"""
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow.compat.v1 as tf  # noqa: E402

from bilm import (BidirectionalLanguageModel, TokenBatcher,  # noqa: E402
                  dump_token_embeddings, weight_layers)
from bilm.default_model import OPTIONS_FILE, WEIGHT_FILE  # noqa: E402

tf.disable_v2_behavior()

options_file, weight_file = OPTIONS_FILE, WEIGHT_FILE
tokenized_context = [s.split() for s in [
    "Pretrained biLMs compute representations useful for NLP tasks .",
    "They give state of the art performance for many tasks ."]]
tokenized_question = [["What", "are", "biLMs", "useful", "for", "?"]]

# A vocabulary of all the dataset's tokens, with <S> and </S>.
workdir = tempfile.mkdtemp()
vocab_file = os.path.join(workdir, "vocab.txt")
all_tokens = {token for sentence in tokenized_context + tokenized_question
              for token in sentence}
with open(vocab_file, "w", encoding="utf-8") as fout:
    fout.write("\n".join(["<S>", "</S>"] + sorted(all_tokens)) + "\n")

# Dump the token embeddings of every vocabulary word (runs its own graph).
token_embedding_file = os.path.join(workdir, "elmo_token_embeddings.hdf5")
dump_token_embeddings(vocab_file, options_file, weight_file, token_embedding_file)

batcher = TokenBatcher(vocab_file)
context_token_ids = tf.placeholder("int32", shape=(None, None))
question_token_ids = tf.placeholder("int32", shape=(None, None))

bilm = BidirectionalLanguageModel(options_file, weight_file,
                                  use_character_inputs=False,
                                  embedding_weight_file=token_embedding_file)
context_embeddings_op = bilm(context_token_ids)
question_embeddings_op = bilm(question_token_ids)

elmo_context_input = weight_layers("input", context_embeddings_op, l2_coef=0.0)
with tf.variable_scope("", reuse=True):
    elmo_question_input = weight_layers("input", question_embeddings_op, l2_coef=0.0)

with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    elmo_context_input_, elmo_question_input_ = sess.run(
        [elmo_context_input["weighted_op"], elmo_question_input["weighted_op"]],
        feed_dict={context_token_ids: batcher.batch_sentences(tokenized_context),
                   question_token_ids: batcher.batch_sentences(tokenized_question)})

print("context ELMo input:", elmo_context_input_.shape)
print("question ELMo input:", elmo_question_input_.shape)
