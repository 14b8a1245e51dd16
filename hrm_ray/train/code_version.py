"""The code a run was started with: the package version, the git commit and whether the tree was dirty,
recorded in the run's config.yaml (`code_version:`, read back as metadata, never as config)."""
from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

PACKAGE = "hrm-ray"
UNKNOWN = "unknown"


def _git(*args: str) -> str | None:
    """Output of a git command in the package's checkout; None outside one (an installed wheel, no git)."""
    try:
        done = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), *args], capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version() -> dict[str, str | bool | None]:
    """{package, version, git_commit, git_dirty}: dirty means uncommitted changes to tracked files
    (None when there is no git checkout to ask)."""
    try:
        version = metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        version = UNKNOWN
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"package": PACKAGE, "version": version, "git_commit": commit or UNKNOWN,
            "git_dirty": None if status is None else bool(status)}
