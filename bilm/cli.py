"""The `bilm` command line. Thin: the work is done by the package.

    bilm demo [--options F --weights F --vocab F]
    bilm embed INPUT OUTPUT [--options F --weights F --vocab F]
               [--layers all|top|average|w0,w1,...] [--batch_size N]
               [--stateless | --stateful] [--no-progress]
    bilm vocab --train_prefix GLOB --vocab_file F [--min_count N] [--max_size N]
    bilm export [--options F --weights F] OUT_DIR

Importing this module does not load TensorFlow: handlers import what they use.

Subcommands are registered in `_build_parser`; add one with a
`_add_<name>_parser` function and a handler.
"""
import argparse
import os
import signal
import sys
from typing import List, Optional

from .data import InvalidNumberOfCharacters

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def _layers_argument(value: str):
    """'all' | 'top' | 'average' | comma-separated layer weights."""
    if value in ("all", "top", "average"):
        return value
    try:
        return [float(weight) for weight in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected all, top, average or comma-separated weights, got {value!r}") from None


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def _add_embed_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "embed", help="embed a text file (one tokenized sentence per line) into hdf5",
        description="Embed every line of INPUT (UTF-8, tokens separated by whitespace) "
                    "and write OUTPUT, an hdf5 file with one float32 dataset per line, "
                    "keyed by the 0-based line number: [n_layers + 1, n_tokens, 2 * proj] "
                    "for --layers all (the layout of dump_bilm_embeddings), "
                    "[n_tokens, 2 * proj] otherwise. OUTPUT appears only once complete.")
    parser.add_argument("input", metavar="INPUT", help="text file, one sentence per line")
    parser.add_argument("output", metavar="OUTPUT", help="hdf5 file to write")
    _add_model_arguments(parser)
    parser.add_argument("--layers", type=_layers_argument, default="all",
                        help="all: every layer [L, n, D] (default); top: the last layer; "
                             "average: the mean of the layers; w0,w1,...: one weight per "
                             "layer, sum_k w_k * layer_k")
    parser.add_argument("--batch_size", type=_positive_int, default=None,
                        help="sentences per run (default 64 stateless, 1 stateful)")
    state = parser.add_mutually_exclusive_group()
    state.add_argument("--stateless", dest="stateless", action="store_true", default=True,
                       help="every batch starts from zero LSTM states; lines are sorted "
                            "by length and batched (default)")
    state.add_argument("--stateful", dest="stateless", action="store_false",
                       help="the original stateful model: lines in order, LSTM states "
                            "carried from line to line (with the default batch size 1 "
                            "this equals the faithful dump_bilm_embeddings)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress line on stderr")
    parser.set_defaults(handler=_embed)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bilm", description="ELMo's bidirectional language model (biLM).")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    _add_demo_parser(subparsers)
    _add_embed_parser(subparsers)
    _add_vocab_parser(subparsers)
    _add_export_parser(subparsers)
    return parser


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--options", help="options.json (default: the bundled model)")
    parser.add_argument("--weights", help="weight hdf5 (default: the bundled model)")
    parser.add_argument("--vocab", help="vocabulary file (default: the bundled one)")


def _add_demo_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="show that a word's vectors depend on its sentence",
        description="For a few ambiguous words, compare the word's vector in a "
                    "probe sentence with its vectors in a same-sense and an "
                    "other-sense sentence, layer by layer.")
    _add_model_arguments(parser)
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads
    from .demo import main as run_demo
    run_demo(args.options, args.weights, args.vocab)
    return 0


def _add_vocab_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "vocab", help="build the training vocabulary from tokenized files",
        description="Write <S>, </S>, <UNK>, then tokens by descending count "
                    "(ties in code-point order); print the token count to use "
                    "as n_train_tokens.")
    parser.add_argument("--train_prefix", required=True, help="glob of training files")
    parser.add_argument("--vocab_file", required=True, help="vocabulary file to write")
    parser.add_argument("--min_count", type=_positive_int, default=1)
    parser.add_argument("--max_size", type=_positive_int, default=None,
                        help="keep at most this many entries, special tokens included")
    parser.set_defaults(handler=_vocab)


def _vocab(args: argparse.Namespace) -> int:
    from .corpus import build_vocabulary
    size, n_tokens = build_vocabulary(args.train_prefix, args.vocab_file,
                                      args.min_count, args.max_size)
    print(f"wrote {size} entries to {args.vocab_file}")
    print(f"n_train_tokens: {n_tokens}")
    return 0


def _add_export_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="write the model as a TF2 SavedModel with TF Hub's ELMo signatures",
        description="Write OUT_DIR, a TensorFlow 2 SavedModel with the 'default' "
                    "(sentences) and 'tokens' (tokens, sequence_len) signatures of "
                    "TF Hub's ELMo; tf.saved_model.load(OUT_DIR) runs it without bilm.")
    parser.add_argument("export_dir", metavar="OUT_DIR",
                        help="directory to write the SavedModel to")
    parser.add_argument("--options", help="options.json of the model (default: the "
                                          "bundled model)")
    parser.add_argument("--weights", help="weight hdf5 of the model (default: the "
                                          "bundled model)")
    parser.set_defaults(handler=_export)


def _model_files(args: argparse.Namespace):
    """(options, weights) from --options/--weights, or the bundled model's."""
    if (args.options is None) != (args.weights is None):
        raise ValueError("give both --options and --weights, or neither for the "
                         "bundled model")
    if args.options is None:
        from . import default_model
        return default_model.OPTIONS_FILE, default_model.WEIGHT_FILE
    return args.options, args.weights


def _export(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    options_file, weight_file = _model_files(args)
    from .export import directory_size, export_saved_model
    export_saved_model(options_file, weight_file, args.export_dir)
    print(f"wrote {args.export_dir} ({directory_size(args.export_dir) / 1e6:.1f} MB)")
    return 0


def _embed(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads
    from .embedder import Embedder, Progress, count_lines
    options_file, weight_file = _model_files(args)
    batch_size = args.batch_size or (64 if args.stateless else 1)
    if not os.path.isfile(args.input):
        raise FileNotFoundError(f"input file not found: {args.input}")
    progress = Progress(total=count_lines(args.input)) if args.progress else None
    with Embedder(options_file, weight_file, args.vocab, batch_size=batch_size,
                  stateless=args.stateless) as embedder:
        embedder.embed_file_to_hdf5(args.input, args.output, layers=args.layers,
                                    progress=progress)
    if progress is not None:
        progress.close()
    return 0


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    args = _build_parser().parse_args(argv)
    previous_handler = None
    try:
        # SIGTERM unwinds like Ctrl-C, so a partial output is removed.
        previous_handler = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    except ValueError:  # not the main thread
        pass
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("\nbilm: interrupted; no output written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OSError, ValueError, InvalidNumberOfCharacters) as err:
        print(f"bilm {args.command}: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


if __name__ == "__main__":
    sys.exit(main())
