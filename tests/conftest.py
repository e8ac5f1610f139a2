"""Shared fixtures: where the real data lies, if anywhere."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# Unit tests use tiny models, for which a second OpenMP thread costs more than it brings (and much more on a busy
# machine); notebooks and benchmarks keep torch's default.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the build tooling in tools/ is not part of the installed package


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data root: ``$MEDMAE_DATA``, else ``../shared/data`` beside the repository; skips when neither exists.

    ``MEDMAE_NO_SHARED=1`` forces the skip, to check that the suite passes without real data.
    """
    reason = "real data not found: set MEDMAE_DATA or place ../shared/data; see README"
    if os.environ.get("MEDMAE_NO_SHARED") == "1":
        pytest.skip(f"{reason} (MEDMAE_NO_SHARED=1)")
    env = os.environ.get("MEDMAE_DATA")
    for path in ([Path(env).expanduser()] if env else []) + [REPO_ROOT.parent / "shared" / "data"]:
        if path.is_dir():
            return path
    pytest.skip(reason)
