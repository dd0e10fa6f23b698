#!/usr/bin/env bash
# Rebuild the bundled default model (bilm/default_model/) from scratch with this
# project's own bin/ scripts: corpus, vocabulary, training, heldout tests, dump.
#   bash scripts/train_default_model.sh [WORKDIR]     # default /tmp/bilm-default-model
# Run it again after an interruption: finished steps are skipped and training
# resumes from the last checkpoint (one is written every 1000 batches).
# EPOCHS=6 bash scripts/train_default_model.sh WORKDIR continues a finished
# run to 6 epochs in all.
# Corpus: Debian's wordnet-base (WordNet 3.0 glosses and examples, WordNet
# license) and dict-gcide (GCIDE, GNU GPL v2+); installed here with apt-get
# when missing. About 2 hours of training on a 2-core CPU (4 epochs of 5.58M
# tokens at ~3,000 tokens/s).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/bilm-default-model}
epochs=${EPOCHS:-4}
mkdir -p "$work"

if [ ! -f /usr/share/wordnet/data.noun ] || [ ! -f /usr/share/dictd/gcide.dict.dz ]; then
    echo "installing the corpus packages: apt-get install wordnet-base dict-gcide"
    apt-get install -y wordnet-base dict-gcide
fi

if [ ! -f "$work/data/done" ]; then
    python scripts/wordnet_corpus.py /usr/share/wordnet "$work/wordnet.txt"
    python scripts/gcide_corpus.py /usr/share/dictd/gcide.dict.dz "$work/gcide.txt"
    # WordNet is split exactly as for the previous bundled model, so its heldout
    # perplexities compare.
    python bin/split_corpus.py --input "$work/wordnet.txt" --output_dir "$work/data/wordnet" \
        --n_shards 10 --heldout_fraction 0.02 --seed 0
    python bin/split_corpus.py --input "$work/gcide.txt" --output_dir "$work/data/gcide" \
        --n_shards 20 --heldout_fraction 0.02 --seed 0
    python bin/build_vocab.py --train_prefix "$work/data/*/train-*" \
        --vocab_file "$work/vocab.txt" --min_count 3
    touch "$work/data/done"
fi

train_args=(--train_prefix "$work/data/*/train-*" --vocab_file "$work/vocab.txt"
            --save_dir "$work/checkpoints" --n_gpus 1 --batch_size 64 --checkpoint_every 1000)
if [ ! -f "$work/checkpoints/checkpoint" ]; then
    python bin/train_elmo.py "${train_args[@]}" --options scripts/default_model_options.json \
        --n_epochs "$epochs"
else
    # The batches still to run: the whole schedule minus the checkpoint's global step.
    remaining=$(python scripts/remaining_batches.py "$work/checkpoints" "$work/data/*/train-*" \
                --n_epochs "$epochs" --tokens_per_batch 1280)
    if [ "$remaining" -gt 0 ]; then
        python bin/restart.py "${train_args[@]}" --n_epochs 1 \
            --n_train_tokens $((remaining * 1280))
    fi
fi

for corpus in wordnet gcide; do     # heldout perplexity, and a unigram model's
    python bin/run_test.py --test_prefix "$work/data/$corpus/heldout.txt" \
        --vocab_file "$work/vocab.txt" --save_dir "$work/checkpoints" --batch_size 64
    python scripts/unigram_perplexity.py --vocab_file "$work/vocab.txt" \
        --train_prefix "$work/data/*/train-*" --test_file "$work/data/$corpus/heldout.txt"
done
python bin/dump_weights.py --save_dir "$work/checkpoints" \
    --outfile bilm/default_model/weights.hdf5 --options_outfile bilm/default_model/options.json
cp "$work/vocab.txt" bilm/default_model/vocab.txt
python -m bilm demo
python scripts/sense_test.py --heldout "$work/data/wordnet/heldout.txt" \
    --train_prefix "$work/data/*/train-*"
