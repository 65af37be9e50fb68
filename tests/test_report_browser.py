"""A real browser renders report/index.html offline: the screenshot is not blank.

Needs Debian's ``chromium`` (``apt-get install -y chromium``; ``.ci/run`` installs it). The browser
runs with networking features off, so a plot that needed a CDN would stay empty.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nemo_rl_hpo.report import build_report
from tests import chromium
from tests import report_fixtures as rf

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(chromium.CHROMIUM is None, reason="needs chromium: apt-get install -y chromium")
def test_index_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    study = rf.single_objective(tmp_path / "sweep")
    index = build_report(study, tmp_path / "sweep" / "report")
    img = _screenshot(index, tmp_path / "index.png", tmp_path / "profile")
    pixels = np.asarray(img.convert("L"), dtype=float)
    # A blank (all-white) page has zero variance; tables, text and plots give plenty.
    assert pixels.std() > 10.0
    # And more than a sliver of the page is drawn on (not just a title on white).
    assert (pixels < 200).mean() > 0.02
    # A standalone plot file draws its figure offline: plotly's plot area (#E5ECF6) is painted,
    # which only happens when plotly.js ran: loaded from file:// by its relative src.
    rgb = np.asarray(
        _screenshot(index.parent / "history.html", tmp_path / "h.png", tmp_path / "p2").convert(
            "RGB"
        ),
        dtype=int,
    )
    assert (np.abs(rgb - [229, 236, 246]).sum(axis=-1) < 6).mean() > 0.2


def _screenshot(page: Path, shot: Path, profile: Path) -> Image.Image:
    proc = chromium.run(page, profile, f"--screenshot={shot}", "--window-size=1200,900")
    assert shot.is_file(), proc.stderr[-2000:]
    img = Image.open(shot)
    img.load()
    assert img.size == (1200, 900)
    return img
