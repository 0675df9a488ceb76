"""agavepy and tapipy, the libraries the notebook uses, in a venv of their own for the tests.

They cannot share the test venv: agavepy pins old dependencies. The venv is built once
(cached under .cache/) and reused; tests run small scripts in it as subprocesses.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".cache" / "token-libs"
REQUIREMENTS = ["agavepy==0.9.5", "tapipy"]


def python() -> Path:
    """The venv's interpreter, creating the venv on first use (safe against parallel test runs)."""
    exe = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / "token-libs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists() or stamp.read_text() != " ".join(REQUIREMENTS):
            venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
            subprocess.run([str(exe), "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True, stdout=sys.stderr)
            stamp.write_text(" ".join(REQUIREMENTS))
    return exe


def run(script: str, home: Path) -> str:
    """Run ``script`` with the libraries, as the notebook would with ``home`` as $HOME."""
    result = subprocess.run(
        [str(python()), "-c", script], capture_output=True, text=True, timeout=120,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
    )
    if result.returncode != 0:
        raise AssertionError(f"token library script failed:\n{result.stderr}")
    return result.stdout
