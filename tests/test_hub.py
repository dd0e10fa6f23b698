"""Released models by name (bilm/hub.py): downloads from a local HTTP server.

The server (standard library, 127.0.0.1) serves a tiny random-weight model
under the layout of the real release, {base}/{id}/elmo_{id}_{options.json,
weights.hdf5}, and can break its transfers on purpose. No test touches the
internet.
"""
import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest

from bilm import hub
from bilm.cli import main
from bilm.weights import write_random_weights

RELEASE = hub.RELEASES["small"]
OPTIONS_NAME = f"elmo_{RELEASE}_options.json"
WEIGHTS_NAME = f"elmo_{RELEASE}_weights.hdf5"
OPTIONS_PATH = f"/elmo/{RELEASE}/{OPTIONS_NAME}"
WEIGHTS_PATH = f"/elmo/{RELEASE}/{WEIGHTS_NAME}"

TINY_OPTIONS = {
    "lstm": {"dim": 16, "projection_dim": 8, "n_layers": 2, "cell_clip": 3,
             "proj_clip": 3, "use_skip_connections": True},
    "char_cnn": {"activation": "relu", "embedding": {"dim": 4},
                 "filters": [[1, 4], [2, 8], [3, 8]], "max_characters_per_token": 50,
                 "n_characters": 262, "n_highway": 1},
}


def _write_model(folder: Path, options: dict, seed: int = 0):
    options_file, weight_file = folder / "options.json", folder / "weights.hdf5"
    options_file.write_text(json.dumps(options), encoding="utf-8")
    write_random_weights(options, str(weight_file), seed=seed)
    return options_file, weight_file


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The tiny model's local files and their bytes."""
    options_file, weight_file = _write_model(tmp_path_factory.mktemp("model"), TINY_OPTIONS)
    return {"options_file": str(options_file), "weight_file": str(weight_file),
            OPTIONS_PATH: options_file.read_bytes(), WEIGHTS_PATH: weight_file.read_bytes()}


class Server:
    """Serves `files` (URL path -> bytes) with HTTP Range support.

    `faults[path]` is a list of what the next requests of that path do, one
    entry consumed per request: 'cut' sends the headers of the whole answer
    and half of its body, then closes; 'cut_all' closes right after the
    headers; 'ignore_range' answers 200 with the whole file."""

    def __init__(self, files):
        self.files = dict(files)
        self.faults = {}
        self.requests = []  # (path, Range header or None)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                fault = (server.faults.get(self.path) or [None]).pop(0) \
                    if server.faults.get(self.path) else None
                if self.path not in server.files:
                    self.send_error(404, "Not Found")
                    return
                data = server.files[self.path]
                start = 0
                requested = self.headers.get("Range")
                if requested and fault != "ignore_range":
                    start = int(requested[len("bytes="):].rstrip("-"))
                    if start >= len(data):
                        self.send_error(416, "Range Not Satisfiable")
                        return
                    self.send_response(206)
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if fault == "cut":
                    body = body[:len(body) // 2]
                elif fault == "cut_all":
                    body = b""
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/elmo"
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def server(model):
    server = Server({OPTIONS_PATH: model[OPTIONS_PATH], WEIGHTS_PATH: model[WEIGHTS_PATH]})
    yield server
    server.close()


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def _files_in(folder: Path):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _closed_port_url() -> str:
    """A localhost URL nobody listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/elmo"


def test_names_and_urls_follow_the_release():
    assert hub.model_urls("small") == (
        "https://s3-us-west-2.amazonaws.com/allennlp/models/elmo/2x1024_128_2048cnn_1xhighway/"
        "elmo_2x1024_128_2048cnn_1xhighway_options.json",
        "https://s3-us-west-2.amazonaws.com/allennlp/models/elmo/2x1024_128_2048cnn_1xhighway/"
        "elmo_2x1024_128_2048cnn_1xhighway_weights.hdf5")
    assert hub.model_urls("Original_5.5B", base_url="http://mirror/elmo/")[1] == (
        "http://mirror/elmo/2x4096_512_2048cnn_2xhighway_5.5B/"
        "elmo_2x4096_512_2048cnn_2xhighway_5.5B_weights.hdf5")
    assert hub.release_id("2x2048_256_2048cnn_1xhighway") == "2x2048_256_2048cnn_1xhighway"
    assert hub.release_id("original") == "2x4096_512_2048cnn_2xhighway"
    with pytest.raises(ValueError, match="unknown model 'large': the released models "
                                         "are small, medium, original, original_5.5B"):
        hub.release_id("large")


def test_download_then_cache_hit(server, cache, model, capsys):
    options_file, weight_file = hub.model_files("small", cache_dir=str(cache),
                                                base_url=server.base_url)
    assert (options_file, weight_file) == (str(cache / RELEASE / OPTIONS_NAME),
                                           str(cache / RELEASE / WEIGHTS_NAME))
    assert Path(weight_file).read_bytes() == model[WEIGHTS_PATH]
    assert Path(options_file).read_bytes() == model[OPTIONS_PATH]
    assert _files_in(cache) == [f"{RELEASE}/{OPTIONS_NAME}", f"{RELEASE}/{WEIGHTS_NAME}"]
    assert server.requests == [(OPTIONS_PATH, None), (WEIGHTS_PATH, None)]
    stderr = capsys.readouterr().err
    assert f"downloading {server.base_url}/{RELEASE}/{WEIGHTS_NAME}" in stderr
    size_kb = len(model[WEIGHTS_PATH]) / 1e3
    assert f"{size_kb:.1f} kB of {size_kb:.1f} kB  100%  " in stderr
    # the release id is the same model; the cached pair costs no request
    again = hub.model_files(RELEASE, cache_dir=str(cache), base_url=server.base_url)
    assert again == (options_file, weight_file)
    assert len(server.requests) == 2
    assert capsys.readouterr().err == ""


def test_base_url_and_cache_from_the_environment(server, cache, monkeypatch):
    monkeypatch.setenv("BILM_BASE_URL", server.base_url)
    monkeypatch.setenv("BILM_CACHE", str(cache))
    assert hub.model_files("small", progress=False)[1] == str(cache / RELEASE / WEIGHTS_NAME)
    assert [path for path, _ in server.requests] == [OPTIONS_PATH, WEIGHTS_PATH]


def test_interrupted_transfer_resumes_with_a_range_request(server, cache, model, capsys):
    server.faults[WEIGHTS_PATH] = ["cut", "cut"]
    weight_file = hub.model_files("small", cache_dir=str(cache), base_url=server.base_url)[1]
    assert Path(weight_file).read_bytes() == model[WEIGHTS_PATH]
    size = len(model[WEIGHTS_PATH])
    first_cut = size // 2
    second_cut = first_cut + (size - first_cut) // 2
    assert server.requests[1:] == [(WEIGHTS_PATH, None),
                                   (WEIGHTS_PATH, f"bytes={first_cut}-"),
                                   (WEIGHTS_PATH, f"bytes={second_cut}-")]
    assert "transfer broke off" in capsys.readouterr().err
    assert _files_in(cache) == [f"{RELEASE}/{OPTIONS_NAME}", f"{RELEASE}/{WEIGHTS_NAME}"]


def test_server_ignoring_range_gives_a_clean_retry(server, cache, model):
    server.faults[WEIGHTS_PATH] = ["cut", "ignore_range"]
    weight_file = hub.model_files("small", cache_dir=str(cache), base_url=server.base_url,
                                  progress=False)[1]
    assert Path(weight_file).read_bytes() == model[WEIGHTS_PATH]
    assert server.requests[-1] == (WEIGHTS_PATH, f"bytes={len(model[WEIGHTS_PATH]) // 2}-")


def test_partial_file_of_an_interrupted_run_is_resumed(server, cache, model):
    # what Ctrl-C leaves: the .part of the weights
    part = cache / RELEASE / (WEIGHTS_NAME + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(model[WEIGHTS_PATH][:1000])
    weight_file = hub.model_files("small", cache_dir=str(cache), base_url=server.base_url,
                                  progress=False)[1]
    assert Path(weight_file).read_bytes() == model[WEIGHTS_PATH]
    assert server.requests[-1] == (WEIGHTS_PATH, "bytes=1000-")
    assert not part.exists()


def test_transfer_that_never_completes_leaves_nothing(server, cache, model):
    server.faults[WEIGHTS_PATH] = ["cut"] + ["cut_all"] * 10
    with pytest.raises(hub.DownloadError) as error:
        hub.model_files("small", cache_dir=str(cache), base_url=server.base_url,
                        progress=False)
    message = str(error.value)
    url = f"{server.base_url}/{RELEASE}/{WEIGHTS_NAME}"
    assert message.startswith(f"cannot download {url}: {hub.MAX_ATTEMPTS} attempts in a "
                              "row brought nothing new")
    assert f"of {len(model[WEIGHTS_PATH])} bytes arrived" in message
    assert f"save both files, names unchanged, in {cache / RELEASE}" in message
    # 1 + MAX_ATTEMPTS requests of the weights: the first brought half the file
    assert len(server.requests) == 2 + hub.MAX_ATTEMPTS
    assert _files_in(cache) == [f"{RELEASE}/{OPTIONS_NAME}"]


def test_corrupt_weight_file_is_not_kept(server, cache):
    server.files[WEIGHTS_PATH] = os.urandom(5000)
    url = f"{server.base_url}/{RELEASE}/{WEIGHTS_NAME}"
    with pytest.raises(hub.DownloadError,
                       match=f"^{url} is not a usable model file .*not a readable hdf5 file"):
        hub.model_files("small", cache_dir=str(cache), base_url=server.base_url,
                        progress=False)
    assert _files_in(cache) == [f"{RELEASE}/{OPTIONS_NAME}"]


def test_weight_file_of_other_shapes_is_not_kept(server, cache, tmp_path):
    other = dict(TINY_OPTIONS, lstm=dict(TINY_OPTIONS["lstm"], dim=32))
    server.files[WEIGHTS_PATH] = _write_model(tmp_path, other)[1].read_bytes()
    with pytest.raises(hub.DownloadError,
                       match=r"dataset 'RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/W_0' has "
                             r"shape \(16, 128\) but options.json requires \(16, 64\)\); "
                             "nothing was kept in the cache$"):
        hub.model_files("small", cache_dir=str(cache), base_url=server.base_url,
                        progress=False)
    assert _files_in(cache) == [f"{RELEASE}/{OPTIONS_NAME}"]


def test_options_for_training_are_not_kept(server, cache):
    training = dict(TINY_OPTIONS, char_cnn=dict(TINY_OPTIONS["char_cnn"], n_characters=261))
    server.files[OPTIONS_PATH] = json.dumps(training).encode()
    with pytest.raises(hub.DownloadError, match="is not a usable model file .*"
                                                "char_cnn.n_characters is 261"):
        hub.model_files("small", cache_dir=str(cache), base_url=server.base_url,
                        progress=False)
    assert _files_in(cache) == [] and not (cache / RELEASE).exists()


def test_dead_link(server, cache):
    del server.files[WEIGHTS_PATH]
    url = f"{server.base_url}/{RELEASE}/{WEIGHTS_NAME}"
    with pytest.raises(hub.DownloadError) as error:
        hub.model_files("small", cache_dir=str(cache), base_url=server.base_url,
                        progress=False)
    assert str(error.value) == (
        f"cannot download {url}: HTTP 404 Not Found; the cache is {cache}; to place the "
        f"model by hand, download {server.base_url}/{RELEASE}/{OPTIONS_NAME} and {url} "
        f"elsewhere and save both files, names unchanged, in {cache / RELEASE} "
        "($BILM_CACHE moves the cache, $BILM_BASE_URL names a mirror)")
    assert _files_in(cache) == [f"{RELEASE}/{OPTIONS_NAME}"]


def test_offline(cache):
    base_url = _closed_port_url()
    with pytest.raises(hub.DownloadError) as error:
        hub.model_files("small", cache_dir=str(cache), base_url=base_url, progress=False)
    message = str(error.value)
    assert message.startswith(f"cannot download {base_url}/{RELEASE}/{OPTIONS_NAME}: ")
    assert "Connection refused" in message
    assert f"the cache is {cache}; to place the model by hand" in message
    assert _files_in(cache) == [] and not (cache / RELEASE).exists()


def test_files_placed_by_hand_need_no_network(cache, model):
    directory = cache / RELEASE
    directory.mkdir(parents=True)
    (directory / OPTIONS_NAME).write_bytes(model[OPTIONS_PATH])
    (directory / WEIGHTS_NAME).write_bytes(model[WEIGHTS_PATH])
    assert hub.model_files("small", cache_dir=str(cache), base_url=_closed_port_url()) == (
        str(directory / OPTIONS_NAME), str(directory / WEIGHTS_NAME))
    # a bad file in the cache is reported, and left for the user to delete
    (directory / WEIGHTS_NAME).write_bytes(b"not hdf5")
    with pytest.raises(hub.DownloadError, match=f"^{directory / WEIGHTS_NAME} \\(cached copy "
                                                ".*not a readable hdf5 file.*; delete it"):
        hub.model_files("small", cache_dir=str(cache), base_url=_closed_port_url())


def test_check_reads_only_what_the_options_need(model, tmp_path):
    # the inference check accepts extra datasets (a dump with the softmax)
    weight_file = tmp_path / "weights.hdf5"
    weight_file.write_bytes(Path(model["weight_file"]).read_bytes())
    with h5py.File(weight_file, "a") as fout:
        fout["softmax/W"] = np.zeros((5, 8), np.float32)
    from bilm.weights import check_inference_weights
    check_inference_weights(TINY_OPTIONS, str(weight_file))
    with h5py.File(weight_file, "a") as fout:
        del fout["CNN_high_0/W_carry"]
    with pytest.raises(ValueError, match="missing dataset 'CNN_high_0/W_carry'"):
        check_inference_weights(TINY_OPTIONS, str(weight_file))


# -- the callers: Embedder, `bilm embed`, `bilm export` -----------------------

SENTENCES = [["The", "bank", "closed", "."], ["naïve", "café"]]


@pytest.fixture(scope="module")
def expected(model):
    """SENTENCES embedded from the model's local files."""
    from bilm.embedder import Embedder
    with Embedder(model["options_file"], model["weight_file"]) as embedder:
        return embedder.embed_sentences(SENTENCES)


@pytest.fixture
def environment(server, cache, monkeypatch):
    monkeypatch.setenv("BILM_BASE_URL", server.base_url)
    monkeypatch.setenv("BILM_CACHE", str(cache))


def test_embedder_by_name(environment, expected):
    from bilm.embedder import Embedder
    with Embedder("small") as embedder:
        vectors = embedder.embed_sentences(SENTENCES)
    for got, want in zip(vectors, expected):
        assert got.shape == want.shape == (3, len(want[0]), 16)
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="a released model's name alone "
                                         r"\(small, medium, original, original_5.5B\)"):
        Embedder("smal")


def test_cli_embed_by_name_and_by_url(environment, server, cache, expected, tmp_path,
                                      capsys):
    text_file = tmp_path / "input.txt"
    text_file.write_text("\n".join(" ".join(s) for s in SENTENCES) + "\n", encoding="utf-8")
    output = tmp_path / "out.hdf5"
    assert main(["embed", str(text_file), str(output), "--model", "small"]) == 0
    stderr = capsys.readouterr().err
    assert f"downloading {server.base_url}/{RELEASE}/{WEIGHTS_NAME}" in stderr
    with h5py.File(output, "r") as fin:
        for k, want in enumerate(expected):
            np.testing.assert_allclose(fin[str(k)][...], want, atol=1e-6, rtol=0)
    # URLs for --options/--weights go to the cache too, under urls/
    output.unlink()
    assert main(["embed", str(text_file), str(output), "--no-progress",
                 "--options", f"{server.base_url}/{RELEASE}/{OPTIONS_NAME}",
                 "--weights", f"{server.base_url}/{RELEASE}/{WEIGHTS_NAME}"]) == 0
    assert capsys.readouterr().err == ""
    assert output.exists()
    assert sum(name.startswith("urls/") for name in _files_in(cache)) == 2
    assert main(["embed", str(text_file), str(output), "--model", "small",
                 "--options", "x.json"]) == 1
    assert "give --model or --options/--weights, not both" in capsys.readouterr().err


def test_cli_fails_cleanly_offline(cache, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("BILM_BASE_URL", _closed_port_url())
    monkeypatch.setenv("BILM_CACHE", str(cache))
    text_file = tmp_path / "input.txt"
    text_file.write_text("a b\n", encoding="utf-8")
    output = tmp_path / "out.hdf5"
    assert main(["embed", str(text_file), str(output), "--model", "small"]) == 1
    stderr = capsys.readouterr().err
    assert stderr.startswith("bilm embed: error: cannot download ")
    assert stderr.count("\n") == 1  # one line
    assert "Connection refused" in stderr and str(cache) in stderr
    assert not output.exists() and _files_in(cache) == []


def test_cli_export_by_name(environment, cache, tmp_path, monkeypatch, capsys):
    # the export itself is tested in test_export.py; here: what it is given
    import bilm.export
    calls = []
    monkeypatch.setattr(bilm.export, "export_saved_model",
                        lambda *args: calls.append(args))
    monkeypatch.setattr(bilm.export, "directory_size", lambda path: 0)
    export_dir = str(tmp_path / "saved")
    assert main(["export", "--model", "small", export_dir]) == 0
    assert calls == [(str(cache / RELEASE / OPTIONS_NAME), str(cache / RELEASE / WEIGHTS_NAME),
                      export_dir)]
    assert main(["export", "--model", "small", "--options", "o.json", export_dir]) == 1
    assert "give --model or --options/--weights, not both" in capsys.readouterr().err
    assert len(calls) == 1
