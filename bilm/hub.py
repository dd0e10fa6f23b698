"""The released ELMo models by name, downloaded once into a local cache.

    from bilm.hub import model_files
    options_file, weight_file = model_files("small")    # downloads on first use
    model = BidirectionalLanguageModel(options_file, weight_file)

Names (the release ids of AllenNLP's ELMo page; parameters and weight-file
sizes follow from the shapes in the options):

  small          2x1024_128_2048cnn_1xhighway        13.6M parameters,  54 MB
  medium         2x2048_256_2048cnn_1xhighway        28.0M parameters, 112 MB
  original       2x4096_512_2048cnn_2xhighway        93.6M parameters, 374 MB
  original_5.5B  2x4096_512_2048cnn_2xhighway_5.5B   93.6M parameters, 374 MB

A release's files are {base}/{id}/elmo_{id}_options.json and
{base}/{id}/elmo_{id}_weights.hdf5, base DEFAULT_BASE_URL unless `base_url=`
or $BILM_BASE_URL names a mirror. They are cached in {cache}/{id}/ under those
file names, cache `cache_dir=`, $BILM_CACHE or ~/.cache/bilm; any other URL
given for a file goes to {cache}/urls/{hash of the URL}/. The released models
are character models: no vocabulary file comes with them (a `Batcher` computes
the character ids of any word; a vocabulary only caches them).

A download is written to `<file>.part` and renamed when complete and checked:
the byte count the server announced, options.json valid for inference, and the
weight file a readable hdf5 with every dataset the options require, of the
required shape. A transfer that breaks off resumes where it stopped (an HTTP
Range request; a server that ignores it sends the whole file again). Any
failure removes the `.part` file, so the cache never holds a partial file; only
Ctrl-C keeps it, and the next download of that file resumes from it.
"""
import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Optional, TextIO, Tuple

from .data import InvalidNumberOfCharacters
from .options import N_CHARACTERS_INFERENCE, load_and_validate
from .weights import check_inference_weights

RELEASES = {
    "small": "2x1024_128_2048cnn_1xhighway",
    "medium": "2x2048_256_2048cnn_1xhighway",
    "original": "2x4096_512_2048cnn_2xhighway",
    "original_5.5B": "2x4096_512_2048cnn_2xhighway_5.5B",
}
DEFAULT_BASE_URL = "https://s3-us-west-2.amazonaws.com/allennlp/models/elmo"
BASE_URL_ENV = "BILM_BASE_URL"
CACHE_ENV = "BILM_CACHE"

# Seconds without a byte before a connection counts as dead.
TIMEOUT_SECONDS = 60
# Attempts in a row that bring no new byte before a download fails (a transfer
# that breaks off after some progress is resumed however often that happens).
MAX_ATTEMPTS = 4
_CHUNK_BYTES = 1 << 16


class DownloadError(OSError):
    """A file could not be downloaded, or what arrived is not a usable model file."""


def is_url(path: Optional[str]) -> bool:
    """True for an http:// or https:// address."""
    return isinstance(path, str) and path.lower().startswith(("http://", "https://"))


def release_id(name: str) -> str:
    """'small' (or the id itself, '2x1024_128_2048cnn_1xhighway') -> the release
    id; case does not matter. ValueError listing the names otherwise."""
    key = name.strip().lower()
    for short_name, release in RELEASES.items():
        if key in (short_name.lower(), release.lower()):
            return release
    raise ValueError(f"unknown model {name!r}: the released models are "
                     f"{', '.join(RELEASES)} (or their ids, e.g. {RELEASES['small']})")


def is_model_name(name: Optional[str]) -> bool:
    """True if `name` names a released model (see `release_id`)."""
    if not isinstance(name, str):
        return False
    try:
        release_id(name)
    except ValueError:
        return False
    return True


def default_cache_dir() -> str:
    """$BILM_CACHE, else ~/.cache/bilm."""
    return os.path.expanduser(os.environ.get(CACHE_ENV) or os.path.join("~", ".cache", "bilm"))


def model_urls(name: str, base_url: Optional[str] = None) -> Tuple[str, str]:
    """(options URL, weights URL) of a released model."""
    release = release_id(name)
    base = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
    prefix = f"{base}/{release}/elmo_{release}"
    return f"{prefix}_options.json", f"{prefix}_weights.hdf5"


def model_files(name: str, cache_dir: Optional[str] = None, base_url: Optional[str] = None,
                progress: bool = True) -> Tuple[str, str]:
    """Local (options_file, weight_file) of a released model, downloading what
    is not in the cache yet. Both files are checked before they are returned
    (a cached pair costs no network request, only reading the hdf5 metadata).

    Args:
      name: 'small', 'medium', 'original', 'original_5.5B' or a release id.
      cache_dir: default $BILM_CACHE or ~/.cache/bilm.
      base_url: a mirror holding {id}/elmo_{id}_*; default $BILM_BASE_URL or
        DEFAULT_BASE_URL.
      progress: show the download's progress on stderr.
    """
    release = release_id(name)
    options_url, weights_url = model_urls(release, base_url)
    cache = cache_dir or default_cache_dir()
    directory = os.path.join(cache, release)
    by_hand = (f"the cache is {cache}; to place the model by hand, download "
               f"{options_url} and {weights_url} elsewhere and save both files, "
               f"names unchanged, in {directory}{_SETTINGS_HINT}")
    options_file = _cached_download(options_url, directory, progress, _check_options,
                                    by_hand)
    options = load_and_validate(options_file)
    weight_file = _cached_download(weights_url, directory, progress,
                                   lambda path: check_inference_weights(options, path),
                                   by_hand)
    return options_file, weight_file


def cached_path(url: str, cache_dir: Optional[str] = None, progress: bool = True,
                check: Optional[Callable[[str], None]] = None) -> str:
    """Local copy of any file URL: {cache}/urls/{sha256(url)[:16]}/{file name},
    downloaded on first use. `check(path)` raises if the file is unusable; it
    runs on a new download before it enters the cache, and on a cached copy."""
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    directory = os.path.join(cache_dir or default_cache_dir(), "urls", digest)
    return _cached_download(url, directory, progress, check)


def resolve_model(options_file: Optional[str], weight_file: Optional[str],
                  cache_dir: Optional[str] = None, base_url: Optional[str] = None,
                  progress: bool = True) -> Tuple[Optional[str], Optional[str]]:
    """Local files for what a user gave as the model.

    A released model's name as `options_file` with no `weight_file` ->
    `model_files(name)`; http(s) URLs -> cached copies (a downloaded weight file
    is checked against the options); anything else (paths, None) is returned
    unchanged, for the caller to check.
    """
    if weight_file is None and is_model_name(options_file):
        return model_files(options_file, cache_dir, base_url, progress)
    if is_url(options_file):
        options_file = cached_path(options_file, cache_dir, progress, _check_options)
    if is_url(weight_file):
        check = None
        if options_file is not None and os.path.isfile(options_file):
            options = load_and_validate(options_file)
            check = lambda path: check_inference_weights(options, path)  # noqa: E731
        weight_file = cached_path(weight_file, cache_dir, progress, check)
    return options_file, weight_file


def _check_options(path: str) -> None:
    load_and_validate(path, n_characters=N_CHARACTERS_INFERENCE)


_SETTINGS_HINT = f" (${CACHE_ENV} moves the cache, ${BASE_URL_ENV} names a mirror)"


def _cached_download(url: str, directory: str, progress: bool,
                     check: Optional[Callable[[str], None]],
                     by_hand: Optional[str] = None) -> str:
    """The file of `url` in `directory`, downloaded if absent; checked either way.
    `by_hand` tells how to put the file there without bilm (for the error)."""
    name = os.path.basename(urllib.parse.urlsplit(url).path) or "download"
    target = os.path.join(directory, name)
    if by_hand is None:
        by_hand = (f"to place the file by hand, download {url} elsewhere and save "
                   f"it as {target}{_SETTINGS_HINT}")
    if os.path.isfile(target):
        if check is not None:
            try:
                check(target)
            except (ValueError, OSError, InvalidNumberOfCharacters) as err:
                raise DownloadError(f"{target} (cached copy of {url}) is not usable: "
                                    f"{err}; delete it to download it again") from None
        return target
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"cannot create the cache directory {directory} ({err}); "
                            f"set ${CACHE_ENV} to a writable directory") from None
    part = target + ".part"
    # On Ctrl-C the .part stays (the next download of the file resumes from
    # it); every other failure removes it.
    try:
        _download(url, part, progress)
    except DownloadError as err:
        _remove(part, directory)
        raise DownloadError(f"cannot download {url}: {err}; {by_hand}") from None
    except OSError as err:
        _remove(part, directory)
        raise DownloadError(f"cannot write {part}: {err}") from None
    if check is not None:
        try:
            check(part)
        except (ValueError, OSError, InvalidNumberOfCharacters) as err:
            _remove(part, directory)
            reason = str(err).replace(f"{part}: ", "")  # the URL names the file
            raise DownloadError(f"{url} is not a usable model file ({reason}); "
                                "nothing was kept in the cache") from None
    os.replace(part, target)
    return target


def _remove(path: str, directory: Optional[str] = None) -> None:
    """Remove `path` if it exists, then `directory` if that is left empty."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    if directory is not None:
        try:
            os.rmdir(directory)
        except OSError:  # not empty: the model's other file is there
            pass


class _BrokenTransfer(Exception):
    """The connection ended before the whole body arrived."""


def _download(url: str, part: str, progress: bool) -> None:
    """Fetch `url` into `part`, appending to what an earlier attempt left there
    (Range request); DownloadError when it cannot be completed."""
    show = None  # shown once the server answers: offline, the error is the only line
    problem, failures, size_before = "", 0, -1
    while True:
        offset = os.path.getsize(part) if os.path.exists(part) else 0
        failures = 0 if offset > size_before else failures + 1
        if failures == MAX_ATTEMPTS:
            raise DownloadError(f"{MAX_ATTEMPTS} attempts in a row brought nothing "
                                f"new, the last: {problem}")
        size_before = offset
        request = urllib.request.Request(url, headers={"User-Agent": "bilm"})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                start, total = _body_range(response)
                if progress and show is None:
                    show = _Progress(url)
                if start not in (0, offset):
                    _remove(part)
                    problem = f"the server sent bytes from {start}, not {offset}"
                    continue
                # a server that ignores Range sends the whole file (start 0)
                with open(part, "ab" if start else "wb") as fout:
                    done = _copy_body(response, fout, start, total, show)
            if total is not None and done < total:
                raise _BrokenTransfer(f"{done} of {total} bytes arrived")
            if show is not None:
                show.close(done)
            return
        except urllib.error.HTTPError as err:
            err.close()
            if err.code != 416 or not offset:
                raise DownloadError(f"HTTP {err.code} {err.reason}") from None
            _remove(part)  # Range not satisfiable: what is there is not a prefix
            problem = "HTTP 416 for the rest of a partial file"
        except _BrokenTransfer as err:
            problem = str(err)
            if show is not None:
                show.note(f"transfer broke off ({problem}); resuming")
        except urllib.error.URLError as err:  # no connection at all
            raise DownloadError(str(err.reason)) from None
        except (http.client.HTTPException, TimeoutError, ConnectionError) as err:
            raise DownloadError(f"{type(err).__name__}: {err}") from None


def _body_range(response) -> Tuple[int, Optional[int]]:
    """(byte offset the body starts at, total file size or None)."""
    if response.status == 206:
        content_range = response.headers.get("Content-Range", "")
        try:
            span, total = content_range.split(" ", 1)[1].split("/")
            start = int(span.split("-")[0])
            return start, (int(total) if total != "*" else None)
        except (IndexError, ValueError):
            raise DownloadError(f"bad Content-Range header {content_range!r}") from None
    length = response.headers.get("Content-Length")
    return 0, (int(length) if length and length.isdigit() else None)


def _copy_body(response, fout, offset: int, total: Optional[int],
               show: Optional["_Progress"]) -> int:
    """Append the body to `fout`; return the file's size after it."""
    done = offset
    while True:
        try:
            chunk = response.read(_CHUNK_BYTES)
        except (http.client.HTTPException, OSError) as err:
            fout.flush()
            raise _BrokenTransfer(f"{type(err).__name__}: {err}") from None
        if not chunk:
            return done
        fout.write(chunk)
        done += len(chunk)
        if total is not None and done > total:
            raise DownloadError(f"the server sent more than the {total} bytes it announced")
        if show is not None:
            show(done, total)


class _Progress:
    """'12.3 MB of 54.4 MB  23%  8.1 MB/s  ETA 0:00:05' on stderr: redrawn in
    place on a terminal, a line every 10 s otherwise (a log, a pipe)."""

    def __init__(self, url: str, stream: Optional[TextIO] = None):
        self._stream = stream if stream is not None else sys.stderr
        self._tty = hasattr(self._stream, "isatty") and self._stream.isatty()
        self._interval = 0.2 if self._tty else 10.0
        self._start = self._last = time.perf_counter()
        self._first_byte: Optional[int] = None
        self._total: Optional[int] = None
        self._write(f"downloading {url}\n")

    def __call__(self, done: int, total: Optional[int]) -> None:
        if self._first_byte is None:
            self._first_byte = done  # bytes resumed from an earlier run are not counted in the rate
        self._total = total
        now = time.perf_counter()
        if now - self._last >= self._interval:
            self._last = now
            self._show(done, now, final=False)

    def note(self, text: str) -> None:
        self._write(("\n" if self._tty else "") + text + "\n")

    def close(self, done: int) -> None:
        self._show(done, time.perf_counter(), final=True)

    def _show(self, done: int, now: float, final: bool) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = (done - (self._first_byte or 0)) / elapsed
        parts = [_size(done) + (f" of {_size(self._total)}" if self._total else "")]
        if self._total:
            parts.append(f"{100.0 * done / self._total:.0f}%")
        parts.append(f"{_size(rate)}/s")
        if self._total and rate > 0 and not final:
            parts.append(f"ETA {_clock((self._total - done) / rate)}")
        else:
            parts.append(f"elapsed {_clock(elapsed)}")
        prefix = "\r\x1b[K" if self._tty else ""
        self._write(prefix + "  ".join(parts) + ("\n" if final or not self._tty else ""))

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()


def _size(n_bytes: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes:.0f} B"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
