"""The `bilm` command prints no TensorFlow start-up chatter unless --verbose.

Run as a user would: a fresh process whose environment has no
TF_CPP_MIN_LOG_LEVEL (TensorFlow 2.21 on x86 then prints oneDNN and
cpu_feature_guard notices while it is imported, and C++ errors about DT_BOOL
kernels while a graph runs).
"""
import os
import subprocess
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])


def _environment():
    """This one without TF_CPP_* and BILM_* settings."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("TF_CPP_", "BILM_"))}
    env["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    return env


def test_quiet_unless_verbose(tmp_path):
    (tmp_path / "in.txt").write_text("The bank closed .\n\nnaïve café\n", encoding="utf-8")
    commands = [
        ["embed", "in.txt", "quiet.hdf5", "--no-progress"],
        ["embed", "in.txt", "failed.hdf5", "--options", "missing.json",
         "--weights", "missing.hdf5"],
        ["--verbose", "embed", "in.txt", "verbose.hdf5", "--no-progress"],
    ]
    # side by side: each process spends seconds importing TensorFlow
    processes = [subprocess.Popen([sys.executable, "-m", "bilm", *argv], cwd=tmp_path,
                                  env=_environment(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for argv in commands]
    (quiet, failed, verbose) = [(*p.communicate(timeout=300), p.returncode) for p in processes]

    assert quiet == ("", "", 0)
    assert (tmp_path / "quiet.hdf5").exists()
    # an error after TensorFlow was loaded is still one line
    assert failed == ("", "bilm embed: error: options file not found: missing.json\n", 1)
    # --verbose shows bilm's log (and whatever TensorFlow prints on this machine)
    stdout, stderr, returncode = verbose
    assert returncode == 0, stderr
    assert "bilm.inference: using skip connections" in stderr.splitlines()
