"""The `bilm` command line. Thin: the work is done by the package.

    bilm demo [--model NAME | --options F --weights F] [--vocab F]
    bilm embed INPUT OUTPUT [--model NAME | --options F --weights F] [--vocab F]
               [--layers all|top|average|w0,w1,...] [--batch_size N]
               [--stateless | --stateful] [--no-progress]
    bilm vocab --train_prefix GLOB --vocab_file F [--min_count N] [--max_size N]
    bilm export [--model NAME | --options F --weights F] OUT_DIR   (default: the bundled model)
    (every command also takes --verbose)

--model names a released ELMo model and --options/--weights may be URLs: both
are downloaded once into the cache of `bilm.hub`.

Importing this module does not load TensorFlow: handlers import what they use,
through `_load_tensorflow`, which keeps TensorFlow's start-up messages off the
terminal unless --verbose.

Subcommands are registered in `_build_parser`; add one with a
`_add_<name>_parser` function and a handler.
"""
import argparse
import importlib
import logging
import os
import signal
import sys
import tempfile
from typing import List, Optional, Tuple

from . import hub
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
    # before or after the command; SUPPRESS keeps a subcommand's default from
    # overwriting a --verbose given before it
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    for subparser in subparsers.choices.values():
        subparser.add_argument("--verbose", action="store_true",
                               default=argparse.SUPPRESS, help=VERBOSE_HELP)
    return parser


VERBOSE_HELP = ("show TensorFlow's start-up messages and bilm's log (hidden by "
                "default)")
MODEL_HELP = (f"a released ELMo model: {', '.join(hub.RELEASES)}; downloaded once "
              f"into ${hub.CACHE_ENV} (default ~/.cache/bilm); ${hub.BASE_URL_ENV} "
              "names a mirror")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="NAME", help=MODEL_HELP)
    parser.add_argument("--options", help="options.json, a path or a URL (default: "
                                          "the bundled model)")
    parser.add_argument("--weights", help="weight hdf5, a path or a URL (default: "
                                          "the bundled model)")
    parser.add_argument("--vocab", help="vocabulary file (default: the bundled one)")


def _model_files(args: argparse.Namespace,
                 required: bool = False) -> Tuple[Optional[str], Optional[str]]:
    """Local (options, weights) for --model or --options/--weights (paths or
    URLs, downloaded into the cache); (None, None) for the bundled model."""
    progress = getattr(args, "progress", True)
    if args.model is not None:
        if args.options is not None or args.weights is not None:
            raise ValueError("give --model or --options/--weights, not both")
        return hub.model_files(args.model, progress=progress)
    if (args.options is None) != (args.weights is None) or (required and args.options is None):
        raise ValueError("give both --options and --weights" +
                         (" or --model NAME" if required else
                          ", or neither for the bundled model"))
    return hub.resolve_model(args.options, args.weights, progress=progress)


def _load_tensorflow(args: argparse.Namespace) -> None:
    """Import TensorFlow, silencing its start-up messages unless --verbose.

    TF_CPP_MIN_LOG_LEVEL=3 hides the C++ log once it is set up, but some
    builds (TF 2.21's oneDNN notice) write to stderr before that, during the
    import; so the import runs with file descriptor 2 pointed at a temporary
    file, replayed if the import fails. absl and the 'tensorflow' Python
    logger are set to errors only.
    """
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
        importlib.import_module("tensorflow")
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if "tensorflow" not in sys.modules:
        sys.stderr.flush()
        saved_stderr = os.dup(2)
        try:
            with tempfile.TemporaryFile() as capture:
                os.dup2(capture.fileno(), 2)
                try:
                    importlib.import_module("tensorflow")
                except BaseException:
                    os.dup2(saved_stderr, 2)
                    capture.seek(0)
                    sys.stderr.write(capture.read().decode("utf-8", "replace"))
                    raise
                finally:
                    sys.stderr.flush()
                    os.dup2(saved_stderr, 2)
        finally:
            os.close(saved_stderr)
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _add_demo_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="show that a word's vectors depend on its sentence",
        description="For a few ambiguous words, compare the word's vector in a "
                    "probe sentence with its vectors in a same-sense and an "
                    "other-sense sentence, layer by layer.")
    _add_model_arguments(parser)
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    options_file, weight_file = _model_files(args)
    _load_tensorflow(args)
    from .demo import main as run_demo
    run_demo(options_file, weight_file, args.vocab)
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
    parser.add_argument("--model", metavar="NAME", help=MODEL_HELP)
    parser.add_argument("--options", help="options.json of the model, a path or a URL "
                                          "(default: the bundled model)")
    parser.add_argument("--weights", help="weight hdf5 of the model, a path or a URL "
                                          "(default: the bundled model)")
    parser.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    options_file, weight_file = _model_files(args)
    if options_file is None:
        from . import default_model
        options_file, weight_file = default_model.OPTIONS_FILE, default_model.WEIGHT_FILE
    _load_tensorflow(args)
    from .export import directory_size, export_saved_model
    export_saved_model(options_file, weight_file, args.export_dir)
    print(f"wrote {args.export_dir} ({directory_size(args.export_dir) / 1e6:.1f} MB)")
    return 0


def _embed(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.input):
        raise FileNotFoundError(f"input file not found: {args.input}")
    options_file, weight_file = _model_files(args)
    _load_tensorflow(args)
    from .embedder import Embedder, Progress, count_lines
    batch_size = args.batch_size or (64 if args.stateless else 1)
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
