#!/usr/bin/env bash
# Reproduce the bundled default model (bilm/default_model/) from WordNet 3.0's
# glosses and examples with this project's own bin/ scripts. Not run in CI.
#   bash scripts/train_default_model.sh [WORKDIR]
# Needs Debian's wordnet-base (apt-get install wordnet-base); about 35 minutes
# of training on a 2-core CPU. (The shipped model was trained 4 epochs, then
# 4 more with bin/restart.py; one run of 8 epochs is the same schedule.)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/bilm-default-model}
mkdir -p "$work"

python scripts/wordnet_corpus.py /usr/share/wordnet "$work/corpus.txt"
python bin/split_corpus.py --input "$work/corpus.txt" --output_dir "$work/data" \
    --n_shards 10 --heldout_fraction 0.02 --seed 0
python bin/build_vocab.py --train_prefix "$work/data/train-*" \
    --vocab_file "$work/vocab.txt" --min_count 3
python bin/train_elmo.py --train_prefix "$work/data/train-*" --vocab_file "$work/vocab.txt" \
    --save_dir "$work/checkpoints" --options scripts/default_model_options.json \
    --n_gpus 1 --batch_size 64 --n_epochs 8
python bin/run_test.py --test_prefix "$work/data/heldout.txt" --vocab_file "$work/vocab.txt" \
    --save_dir "$work/checkpoints" --batch_size 64
python scripts/unigram_perplexity.py --vocab_file "$work/vocab.txt" \
    --train_prefix "$work/data/train-*" --test_file "$work/data/heldout.txt"
python bin/dump_weights.py --save_dir "$work/checkpoints" \
    --outfile bilm/default_model/weights.hdf5 --options_outfile bilm/default_model/options.json
cp "$work/vocab.txt" bilm/default_model/vocab.txt
