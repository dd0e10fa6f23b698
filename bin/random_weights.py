"""Write a random-weight inference hdf5 for any options.json.

    python bin/random_weights.py --options options.json --outfile weights.hdf5 --seed 0
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bilm.options import load_and_validate  # noqa: E402
from bilm.weights import write_random_weights  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--options", required=True, help="options.json of the model")
    parser.add_argument("--outfile", required=True, help="weight hdf5 to write")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args()
    options = load_and_validate(args.options)
    write_random_weights(options, args.outfile, seed=args.seed)


if __name__ == "__main__":
    main()
