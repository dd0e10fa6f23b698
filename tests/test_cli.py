"""The `bilm embed` command line (bilm/cli.py), on the bundled model."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from bilm import dump_bilm_embeddings
from bilm.cli import main
from bilm.default_model import OPTIONS_FILE, VOCAB_FILE, WEIGHT_FILE
from bilm.embedder import Embedder

ROOT = str(Path(__file__).resolve().parents[1])
LINES = [
    "The bank raised its interest rates again this year .",
    "",
    "naïve café 日本語 🙂",
    "We sat on the bank of the river and watched the water . " * 4,
    ".",
    "She will play the lead role in the new play .",
]


def _env():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="3")
    return env


def _read_hdf5(path):
    with h5py.File(path, "r") as fin:
        return {key: fin[key][...] for key in fin}


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("layers", ["all", "top", "average", "0.2,0.3,0.5"])
def test_embed_matches_the_api(text_file, tmp_path, capsys, layers):
    output = tmp_path / "out.hdf5"
    argv = ["embed", str(text_file), str(output), "--layers", layers, "--batch_size", "2"]
    assert main(argv) == 0
    stderr = capsys.readouterr().err
    assert "6/6 sentences" in stderr and "sentences/s" in stderr and "tokens/s" in stderr
    api_layers = [0.2, 0.3, 0.5] if "," in layers else layers
    with Embedder() as embedder:
        expected = embedder.embed_sentences([line.split() for line in LINES],
                                            layers=api_layers)
    written = _read_hdf5(output)
    assert sorted(written) == sorted(str(k) for k in range(len(LINES)))
    for k, vectors in enumerate(expected):
        assert written[str(k)].dtype == np.float32
        assert written[str(k)].shape == vectors.shape
        np.testing.assert_allclose(written[str(k)], vectors, atol=1e-6, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.txt", "out.hdf5"]


def test_stateful_is_the_faithful_dump(text_file, tmp_path, capsys):
    output, faithful = tmp_path / "out.hdf5", tmp_path / "faithful.hdf5"
    assert main(["embed", str(text_file), str(output), "--stateful", "--no-progress",
                 "--options", OPTIONS_FILE, "--weights", WEIGHT_FILE,
                 "--vocab", VOCAB_FILE]) == 0
    assert capsys.readouterr().err == ""
    dump_bilm_embeddings(VOCAB_FILE, str(text_file), OPTIONS_FILE, WEIGHT_FILE,
                         str(faithful))
    expected, actual = _read_hdf5(faithful), _read_hdf5(output)
    assert sorted(actual) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key])


@pytest.mark.parametrize("argv,message", [
    ([], "bilm: error: the following arguments are required: COMMAND"),
    (["embed", "in.txt", "out.hdf5", "--layers", "bottom"],
     "bilm embed: error: argument --layers: expected all, top, average or "
     "comma-separated weights, got 'bottom'"),
    (["embed", "in.txt", "out.hdf5", "--batch_size", "0"],
     "bilm embed: error: argument --batch_size: expected a positive integer, got '0'"),
    (["embed", "in.txt", "out.hdf5", "--stateless", "--stateful"],
     "bilm embed: error: argument --stateful: not allowed with argument --stateless"),
    (["vocab", "--vocab_file", "v.txt"],
     "bilm vocab: error: the following arguments are required: --train_prefix"),
    (["export"], "bilm export: error: the following arguments are required: OUT_DIR"),
], ids=["no_command", "layers", "batch_size", "stateless_and_stateful", "vocab", "export"])
def test_bad_usage_is_an_argparse_error(argv, message, capsys):
    """Exit status 2 and the usage error a user reads, naming the argument."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("usage: bilm")
    assert stderr.rstrip().endswith(message)


def test_bad_usage(text_file, tmp_path, capsys):
    output = tmp_path / "out.hdf5"
    assert main(["embed", str(text_file), str(output), "--options", OPTIONS_FILE]) == 1
    assert "both --options and --weights" in capsys.readouterr().err
    assert main(["embed", str(tmp_path / "missing.txt"), str(output)]) == 1
    assert "missing.txt" in capsys.readouterr().err
    assert main(["embed", str(text_file), str(output), "--layers", "1,2"]) == 1
    assert "3 finite floats" in capsys.readouterr().err
    assert not output.exists()


def test_failed_run_leaves_no_output(tmp_path, capsys):
    bad_file = tmp_path / "input.txt"
    bad_file.write_bytes(("good line\n" * 300).encode() + b"bad \xff\n" + b"more\n" * 10)
    output = tmp_path / "out.hdf5"
    assert main(["embed", str(bad_file), str(output), "--batch_size", "4"]) == 1
    assert "line 301: not valid UTF-8" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.txt"]
    # an existing OUTPUT stays as it was
    output.write_bytes(b"old")
    assert main(["embed", str(bad_file), str(output), "--no-progress"]) == 1
    assert "line 301: not valid UTF-8" in capsys.readouterr().err
    assert output.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.txt", "out.hdf5"]


def test_interrupted_run_leaves_no_output(text_file, tmp_path, monkeypatch, capsys):
    calls = []
    run = Embedder._run

    def interrupt_on_third_batch(self, fetch, feed_dict=None):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return run(self, fetch, feed_dict)

    monkeypatch.setattr(Embedder, "_run", interrupt_on_third_batch)
    output = tmp_path / "out.hdf5"
    assert main(["embed", str(text_file), str(output), "--batch_size", "1"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.txt"]


def test_sigterm_leaves_no_output(tmp_path):
    text_file = tmp_path / "input.txt"
    text_file.write_text("a few words per line\n" * 20000, encoding="utf-8")
    output = tmp_path / "out.hdf5"
    process = subprocess.Popen(
        [sys.executable, "-m", "bilm.cli", "embed", str(text_file), str(output),
         "--stateful", "--no-progress"],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".partial") for p in tmp_path.iterdir()):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)  # well inside the loop
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=60)[1]
    assert process.returncode == 130, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.txt"]


# Peak RSS of the process (VmHWM: ru_maxrss would include the parent's peak,
# as it survives execve).
MEMORY_PROBE = textwrap.dedent("""
    import sys
    from bilm.cli import main
    assert main(["embed"] + sys.argv[1:]) == 0
    with open("/proc/self/status") as status:
        print([line.split()[1] for line in status if line.startswith("VmHWM:")][0])
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_memory_stays_flat_and_progress_on_stderr(tmp_path):
    rng = np.random.default_rng(0)
    sizes = {"small": 5000, "large": 20000}
    processes = {}
    for name, n_lines in sizes.items():
        path = tmp_path / f"{name}.txt"
        with open(path, "w", encoding="utf-8") as fout:
            for length in rng.integers(0, 8, n_lines):
                fout.write(" ".join(f"w{k}" for k in rng.integers(0, 100, length)) + "\n")
        # the small run shows its progress, the large one does not
        progress = ["--no-progress"] if name == "large" else []
        processes[name] = subprocess.Popen(
            [sys.executable, "-c", MEMORY_PROBE, str(path), str(tmp_path / f"{name}.hdf5")]
            + progress, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_kib, stderr = {}, {}
    for name, process in processes.items():
        stdout, stderr[name] = process.communicate(timeout=120)
        assert process.returncode == 0, stderr[name]
        peak_kib[name] = int(stdout.split()[-1])
    assert "5,000/5,000 sentences  100%" in stderr["small"]
    assert "sentences/s" in stderr["small"] and "tokens/s" in stderr["small"]
    assert "sentences/s" not in stderr["large"]
    growth_mib = (peak_kib["large"] - peak_kib["small"]) / 1024
    extra_output_mib = (os.path.getsize(tmp_path / "large.hdf5")
                        - os.path.getsize(tmp_path / "small.hdf5")) / 2 ** 20
    print(f"peak RSS {peak_kib} KiB: +{growth_mib:.1f} MiB for 4x the lines "
          f"(+{extra_output_mib:.0f} MiB of output)")
    # holding the outputs would add the whole extra output (about 80 MiB)
    assert extra_output_mib > 60
    assert growth_mib < 30
