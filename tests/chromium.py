"""Headless Chromium for the report tests: a page opened from file:// with networking off.

Needs Debian's ``chromium`` (``apt-get install -y chromium``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def run(page: Path, profile: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """Open ``page`` in a fresh profile with ``flags`` (``--screenshot=...``, ``--dump-dom``)."""
    assert CHROMIUM is not None, "needs chromium: apt-get install -y chromium"
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",  # let plotly draw before the shot or the dump
            *flags,
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
