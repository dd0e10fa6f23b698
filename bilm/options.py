"""Read and validate options.json once, with errors that name the file and key.

An options dict is the plain JSON object the original library used; nothing is
renamed, so files written by the original load unchanged. Validation checks
the keys a graph needs before any graph is built, so a bad file fails with
"options.json: lstm.dim must be an integer" instead of a KeyError deep inside
graph construction.
"""
import json
import numbers
import os
from typing import Any, Optional

# Characters at inference: 256 bytes + 5 specials + 1 "no token" padding id 0.
N_CHARACTERS_INFERENCE = 262
# Characters in training: ids are used unshifted, there is no padding row.
N_CHARACTERS_TRAINING = 261


class OptionsError(ValueError):
    """options.json is missing a key or holds a value of the wrong type."""


def load_options(options_file: str) -> dict:
    """Read options.json as UTF-8; the error names the file when it is bad."""
    try:
        with open(options_file, encoding="utf-8") as fin:
            return json.load(fin)
    except FileNotFoundError:
        raise FileNotFoundError(f"options file not found: {options_file}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise OptionsError(f"{options_file}: not a valid JSON file ({err})") from None


def _get(options: dict, path: str, kind, source: str, required: bool = True,
         default: Any = None) -> Any:
    """Value at a dotted key path, checked to be of `kind` (or None if allowed)."""
    node = options
    parts = path.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, dict):
            where = ".".join(parts[:depth])
            raise OptionsError(f"{source}: {where} must be a JSON object")
        if part not in node:
            if required:
                raise OptionsError(f"{source}: missing required key '{path}'")
            return default
        node = node[part]
    if node is None and not required:
        return default
    if kind is int:
        ok = isinstance(node, numbers.Integral) and not isinstance(node, bool)
    elif kind is float:
        ok = isinstance(node, numbers.Real) and not isinstance(node, bool)
    else:
        ok = isinstance(node, kind)
    if not ok:
        name = getattr(kind, "__name__", str(kind))
        raise OptionsError(f"{source}: '{path}' must be {name}, got {node!r}")
    return node


def validate_options(options: dict, source: str = "options",
                     n_characters: Optional[int] = None) -> dict:
    """Check the keys a biLM graph needs; return the same dict.

    Args:
      options: parsed options.json.
      source: file name used in error messages.
      n_characters: if given, the required char_cnn.n_characters (262 for
        inference, 261 for training); a mismatch raises
        InvalidNumberOfCharacters with the 261/262 hint.
    """
    if not isinstance(options, dict):
        raise OptionsError(f"{source}: must hold a JSON object")
    for key in ("dim", "projection_dim"):
        if _get(options, f"lstm.{key}", int, source) <= 0:
            raise OptionsError(f"{source}: 'lstm.{key}' must be positive")
    if options["lstm"]["projection_dim"] > options["lstm"]["dim"]:
        raise OptionsError(f"{source}: 'lstm.projection_dim' must not exceed 'lstm.dim'")
    n_layers = _get(options, "lstm.n_layers", int, source, required=False, default=1)
    if n_layers < 1:
        raise OptionsError(f"{source}: 'lstm.n_layers' must be >= 1")
    _get(options, "lstm.use_skip_connections", bool, source)
    _get(options, "lstm.cell_clip", float, source, required=False)
    _get(options, "lstm.proj_clip", float, source, required=False)
    if "char_cnn" in options:
        _validate_char_cnn(options, source, n_characters)
    return options


def _validate_char_cnn(options: dict, source: str, n_characters: Optional[int]) -> None:
    from .data import InvalidNumberOfCharacters

    got = _get(options, "char_cnn.n_characters", int, source)
    if n_characters is not None and got != n_characters:
        phase = "inference" if n_characters == N_CHARACTERS_INFERENCE else "training"
        raise InvalidNumberOfCharacters(
            f"{source}: char_cnn.n_characters is {got} but {phase} needs "
            f"{n_characters}. Train with 261 and set n_characters=262 in the "
            "options.json used for inference (see README: 261/262 rule).")
    max_chars = _get(options, "char_cnn.max_characters_per_token", int, source)
    _get(options, "char_cnn.embedding.dim", int, source)
    activation = _get(options, "char_cnn.activation", str, source)
    if activation not in ("relu", "tanh"):
        raise OptionsError(f"{source}: 'char_cnn.activation' must be 'relu' or "
                           f"'tanh', got {activation!r}")
    _get(options, "char_cnn.n_highway", int, source, required=False)
    filters = _get(options, "char_cnn.filters", list, source)
    if not filters:
        raise OptionsError(f"{source}: 'char_cnn.filters' is empty")
    for pair in filters:
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(v, int) and v > 0 for v in pair)):
            raise OptionsError(f"{source}: each of 'char_cnn.filters' must be "
                               f"[width, count] of positive integers, got {pair!r}")
        if pair[0] > max_chars:
            raise OptionsError(f"{source}: filter width {pair[0]} exceeds "
                               f"max_characters_per_token {max_chars}")
    n_filters = sum(count for _, count in filters)
    projection_dim = options["lstm"]["projection_dim"]
    if n_filters < projection_dim:
        raise OptionsError(f"{source}: the filter counts sum to {n_filters}, "
                           f"less than lstm.projection_dim {projection_dim}")


def load_and_validate(options_file: str, n_characters: Optional[int] = None) -> dict:
    """load_options + validate_options, errors naming `options_file`."""
    if not os.path.exists(options_file):
        raise FileNotFoundError(f"options file not found: {options_file}")
    return validate_options(load_options(options_file), options_file, n_characters)


def lstm_settings(options: dict) -> dict:
    """The LSTM hyperparameters with the original defaults filled in."""
    lstm = options["lstm"]
    return {
        "dim": lstm["dim"],
        "projection_dim": lstm["projection_dim"],
        "n_layers": lstm.get("n_layers", 1),
        "cell_clip": lstm.get("cell_clip"),
        "proj_clip": lstm.get("proj_clip"),
        "use_skip_connections": lstm["use_skip_connections"],
    }


def lstm_output_dim(lstm_dim: int, projection_dim: int) -> int:
    """Size of h: the projection when it is smaller than the cell."""
    return projection_dim if projection_dim < lstm_dim else lstm_dim
