"""Output files that appear under their name only when complete."""
import contextlib
import os
import secrets
from typing import Iterator


@contextlib.contextmanager
def atomic_output(outfile: str) -> Iterator[str]:
    """Yield a temporary name next to `outfile` to write to; it is renamed to
    `outfile` when the block completes and removed if the block fails, so an
    interrupted run never leaves a partial file at `outfile`."""
    directory, name = os.path.split(os.path.abspath(outfile))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"output directory not found: {directory}")
    tmp_file = os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
    try:
        yield tmp_file
    except BaseException:
        if os.path.exists(tmp_file):
            os.remove(tmp_file)
        raise
    os.replace(tmp_file, outfile)
