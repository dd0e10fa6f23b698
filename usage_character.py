"""ELMo from character input: the biLM runs on every batch.

Runs from the repository root with no arguments, on the bundled model.
For a released model, set vocab_file, options_file and weight_file.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow.compat.v1 as tf  # noqa: E402

from bilm import Batcher, BidirectionalLanguageModel, weight_layers  # noqa: E402
from bilm.default_model import OPTIONS_FILE, VOCAB_FILE, WEIGHT_FILE  # noqa: E402

tf.disable_v2_behavior()  # TF1-style graph code, as the original examples

vocab_file, options_file, weight_file = VOCAB_FILE, OPTIONS_FILE, WEIGHT_FILE

# Batcher: tokenized sentences -> character ids.
batcher = Batcher(vocab_file, 50)

# Inputs: character ids, [batch, n_tokens + 2, 50].
context_character_ids = tf.placeholder("int32", shape=(None, None, 50))
question_character_ids = tf.placeholder("int32", shape=(None, None, 50))

# One biLM, called on both inputs: the weights are shared.
bilm = BidirectionalLanguageModel(options_file, weight_file)
context_embeddings_op = bilm(context_character_ids)
question_embeddings_op = bilm(question_character_ids)

# ELMo at the input and output of a task model; context and question share
# the mixing weights through the reuse scope.
elmo_context_input = weight_layers("input", context_embeddings_op, l2_coef=0.0)
with tf.variable_scope("", reuse=True):
    elmo_question_input = weight_layers("input", question_embeddings_op, l2_coef=0.0)
elmo_context_output = weight_layers("output", context_embeddings_op, l2_coef=0.0)
with tf.variable_scope("", reuse=True):
    elmo_question_output = weight_layers("output", question_embeddings_op, l2_coef=0.0)

raw_context = ["Pretrained biLMs compute representations useful for NLP tasks .",
               "They give state of the art performance for many tasks ."]
raw_question = ["What are biLMs useful for ?"]
tokenized_context = [sentence.split() for sentence in raw_context]
tokenized_question = [sentence.split() for sentence in raw_question]

with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    context_ids = batcher.batch_sentences(tokenized_context)
    question_ids = batcher.batch_sentences(tokenized_question)
    elmo_context_input_, elmo_question_input_ = sess.run(
        [elmo_context_input["weighted_op"], elmo_question_input["weighted_op"]],
        feed_dict={context_character_ids: context_ids,
                   question_character_ids: question_ids})

print("context ELMo input:", elmo_context_input_.shape)
print("question ELMo input:", elmo_question_input_.shape)
