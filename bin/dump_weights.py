#!/usr/bin/env python
"""Write the latest checkpoint of a training directory as an inference hdf5.

With --options_outfile the inference options.json (n_characters 262) is
written too, so that the pair loads in BidirectionalLanguageModel as is.

  python bin/dump_weights.py --save_dir checkpoints/ --outfile model/weights.hdf5 \\
      --options_outfile model/options.json
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bilm.training import dump_weights  # noqa: E402


def main(args: argparse.Namespace) -> None:
    dump_weights(args.save_dir, args.outfile, options_outfile=args.options_outfile,
                 include_softmax=args.include_softmax)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--save_dir", required=True, help="Location of checkpoint files")
    parser.add_argument("--outfile", required=True, help="Output hdf5 file with weights")
    parser.add_argument("--options_outfile",
                        help="Also write the inference options.json (n_characters 262) here")
    parser.add_argument("--include_softmax", action="store_true",
                        help="Also write softmax/W and softmax/b")
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(parser.parse_args())
