"""The shell scripts users submit: syntax and shellcheck clean (shellcheck is installed in CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = [REPO / "slurm" / "train_road.sh", REPO / "slurm" / "precompute_logits.sh", REPO / "slurm" / "deepspeed_launch.sh",
           REPO / "tests" / "slurm_cluster.sh", REPO / "tests" / "slurm_nodes.sh", REPO / ".ci" / "run",
           REPO / "bench" / "gpu.sh"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax_and_shellcheck(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    if not shutil.which("shellcheck"):
        if os.environ.get("ROAD_DS_REQUIRE_SLURM") == "1":
            pytest.fail("shellcheck is not installed")
        pytest.skip("shellcheck is not installed")
    r = subprocess.run(["shellcheck", "-x", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
