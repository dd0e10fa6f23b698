"""Shared pytest fixtures.

The reference outputs of the original TF1 code live outside the project
(``../shared/reference``). ``.ci/run`` points ``BILM_REFERENCE_DIR`` at that
folder; tests that need it skip, saying why, when it is unset.
"""
import os
from pathlib import Path

import pytest

REFERENCE_ENV = "BILM_REFERENCE_DIR"


@pytest.fixture(scope="session")
def tf1_fixtures() -> Path:
    """Path of ``tf1-fixtures`` inside the reference folder (skips if unset)."""
    root = os.environ.get(REFERENCE_ENV)
    if not root:
        pytest.skip(f"{REFERENCE_ENV} is not set: reference outputs of the "
                    "original TF1 code are unavailable")
    path = Path(root) / "tf1-fixtures"
    if not path.is_dir():
        pytest.fail(f"{REFERENCE_ENV}={root} has no tf1-fixtures folder")
    return path
