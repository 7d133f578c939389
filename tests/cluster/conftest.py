"""The local one-node SLURM cluster (tools/local_slurm.sh) for the tests marked ``slurm``.

The session fixture :func:`slurm_cluster` uses a cluster that is already up (``.ci/run`` starts
one) or starts it, and stops it at the end only if it started it. When the scheduler cannot start
(not root and slurm not installed, no apt-get, a container that forbids the daemons, ...) every
test that needs it is skipped with the script's reason; ``YOLOATTN_SLURM=0`` skips them outright.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "local_slurm.sh"
STATE = Path(os.environ.get("YOLOATTN_SLURM_DIR", "/tmp/yoloattn-slurm"))


def _script(cmd: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), cmd], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Path]:
    """``SLURM_CONF`` of a running local cluster (set in ``os.environ`` for the session)."""
    if os.environ.get("YOLOATTN_SLURM") == "0":
        pytest.skip("SLURM tests turned off (YOLOATTN_SLURM=0)")
    try:
        import submitit  # noqa: F401
    except ImportError:
        pytest.skip("submitit is not installed (pip install -e '.[test]' or '.[cluster]')")
    conf = STATE / "etc" / "slurm.conf"
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    started = False
    try:
        if _script("status", 60).returncode != 0:
            try:
                proc = _script("start", 900)
            except subprocess.TimeoutExpired:
                pytest.skip(
                    "the local SLURM cluster did not start within 15 min (tools/local_slurm.sh start)"
                )
            if proc.returncode != 0:
                reason = " | ".join(proc.stderr.strip().splitlines()[-6:])
                print(f"\nlocal SLURM cluster could not start: {proc.stderr}")
                pytest.skip(f"the local SLURM cluster could not start: {reason}")
            started = True
        yield conf
    finally:
        if started and os.environ.get("YOLOATTN_SLURM_KEEP") != "1":
            _script("stop", 120)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
