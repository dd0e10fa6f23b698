#!/usr/bin/env bash
# Train the candidate successor of the bundled model on two dictionaries
# (WordNet and GCIDE) from scratch with this project's own bin/ scripts:
# corpus, vocabulary, training, heldout tests, dump to WORKDIR/model, demo and
# sense test of the result.
#   bash scripts/train_dictionary_model.sh [WORKDIR]     # default /tmp/bilm-dictionary-model
# Run it again after an interruption: finished steps are skipped and training
# resumes from the last checkpoint (one is written every 1000 batches).
# EPOCHS=6 bash scripts/train_dictionary_model.sh WORKDIR continues a finished
# run to 6 epochs in all; OPTIONS=FILE trains another config (default
# scripts/dictionary_model_options.json).
# Corpus: Debian's wordnet-base (WordNet 3.0 glosses and examples, WordNet
# license) and dict-gcide (GCIDE, GNU GPL v2+); installed here with apt-get
# when missing. About 2 hours of training on a 2-core CPU (4 epochs of 5.58M
# tokens at ~3,000 tokens/s).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/bilm-dictionary-model}
epochs=${EPOCHS:-4}
options=${OPTIONS:-scripts/dictionary_model_options.json}
batch_size=64
tokens_per_batch=$((batch_size * 20))   # unroll_steps 20
mkdir -p "$work"

if [ ! -f /usr/share/wordnet/data.noun ] || [ ! -f /usr/share/dictd/gcide.dict.dz ]; then
    echo "installing the corpus packages: apt-get install wordnet-base dict-gcide"
    apt-get install -y wordnet-base dict-gcide
fi

if [ ! -f "$work/data/done" ]; then
    python scripts/wordnet_corpus.py /usr/share/wordnet "$work/wordnet.txt" --mixed_style
    python scripts/gcide_corpus.py /usr/share/dictd/gcide.dict.dz "$work/gcide.txt" --mixed_style
    # WordNet is split exactly as for the previous bundled model (same sentences
    # in the heldout file); plain/ holds that heldout file unrestyled, so its
    # perplexities compare.
    python bin/split_corpus.py --input "$work/wordnet.txt" --output_dir "$work/data/wordnet" \
        --n_shards 10 --heldout_fraction 0.02 --seed 0
    python scripts/wordnet_corpus.py /usr/share/wordnet "$work/wordnet-plain.txt"
    python bin/split_corpus.py --input "$work/wordnet-plain.txt" --output_dir "$work/plain" \
        --n_shards 1 --heldout_fraction 0.02 --seed 0
    python bin/split_corpus.py --input "$work/gcide.txt" --output_dir "$work/data/gcide" \
        --n_shards 20 --heldout_fraction 0.02 --seed 0
    python bin/build_vocab.py --train_prefix "$work/data/*/train-*" \
        --vocab_file "$work/vocab.txt" --min_count 3
    touch "$work/data/done"
fi

train_args=(--train_prefix "$work/data/*/train-*" --vocab_file "$work/vocab.txt"
            --save_dir "$work/checkpoints" --n_gpus 1 --batch_size "$batch_size" --checkpoint_every 1000)
if [ ! -f "$work/checkpoints/checkpoint" ]; then
    python bin/train_elmo.py "${train_args[@]}" --options "$options" \
        --n_epochs "$epochs"
else
    # The batches still to run: the whole schedule minus the checkpoint's global step.
    remaining=$(python scripts/remaining_batches.py "$work/checkpoints" "$work/data/*/train-*" \
                --n_epochs "$epochs" --tokens_per_batch "$tokens_per_batch")
    if [ "$remaining" -gt 0 ]; then
        python bin/restart.py "${train_args[@]}" --n_epochs 1 \
            --n_train_tokens $((remaining * tokens_per_batch))
    fi
fi

for heldout in data/wordnet data/gcide plain; do   # heldout perplexity, and a unigram model's
    python bin/run_test.py --test_prefix "$work/$heldout/heldout.txt" \
        --vocab_file "$work/vocab.txt" --save_dir "$work/checkpoints" --batch_size 64
    python scripts/unigram_perplexity.py --vocab_file "$work/vocab.txt" \
        --train_prefix "$work/data/*/train-*" --test_file "$work/$heldout/heldout.txt"
done
model=("--options" "$work/model/options.json" "--weights" "$work/model/weights.hdf5"
       "--vocab" "$work/model/vocab.txt")
python bin/dump_weights.py --save_dir "$work/checkpoints" \
    --outfile "$work/model/weights.hdf5" --options_outfile "$work/model/options.json"
cp "$work/vocab.txt" "$work/model/vocab.txt"
python -m bilm demo "${model[@]}"
python scripts/sense_test.py "${model[@]}" --heldout "$work/plain/heldout.txt" \
    --train_prefix "$work/data/*/train-*"
