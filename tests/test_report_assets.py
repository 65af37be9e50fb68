"""plotly.js is written once per report dir and every page loads it by a relative path.

Before, each of a report's ~9 pages embedded its own copy of plotly.js (~4.8 MB): a 20-trial
report was ~39 MB (single objective) to ~49 MB (two objectives). The studies come from
tests/report_fixtures.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from nemo_rl_hpo.report import build_report
from tests import chromium
from tests import report_fixtures as rf

# plotly.js once (~4.8 MB) + ~10 pages of figure JSON + ~10 PNGs stay under 6 MB for 20 trials;
# a second embedded copy of plotly.js alone would push it past 9.6 MB.
MAX_REPORT_BYTES = 6_000_000
SCRIPT_SRC = re.compile(r"<script[^>]+src=\"([^\"]+)\"")

KINDS: dict[str, Callable[[Path], optuna.Study]] = {
    "single_objective": lambda d: rf.single_objective(d, n=20),
    "multi_objective": lambda d: rf.multi_objective(d, n=20),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_twenty_trial_report_has_one_plotly_js_that_every_page_loads(
    tmp_path: Path, kind: str
) -> None:
    study = KINDS[kind](tmp_path / "sweep")
    assert len(study.trials) == 20
    out = build_report(study, tmp_path / "sweep" / "report").parent
    files = [f for f in out.iterdir() if f.is_file()]
    # The whole report dir, PNGs and timings included, fits the bound.
    total = sum(f.stat().st_size for f in files)
    assert total <= MAX_REPORT_BYTES, f"{total / 1e6:.2f} MB"
    # plotly.js's source (its banner) is in exactly one file: plotly.min.js.
    with_plotly = [f.name for f in files if "plotly.js v" in f.read_text(errors="replace")]
    assert with_plotly == ["plotly.min.js"]
    pages = sorted(f for f in files if f.suffix == ".html")
    assert len(pages) >= 8  # index + every drawn plot
    for page in pages:
        text = page.read_text()
        # Each page draws its figure(s) with the one script it loads: the bare relative name,
        # which resolves beside the page from file:// as from any web server (no CDN, no URL).
        assert "Plotly.newPlot(" in text, page.name
        assert SCRIPT_SRC.findall(text) == ["plotly.min.js"], page.name


def test_rebuilt_report_replaces_a_stale_plotly_js(tmp_path: Path) -> None:
    study = rf.single_objective(tmp_path / "sweep", n=4)
    out = tmp_path / "sweep" / "report"
    out.mkdir(parents=True)
    # A report dir written by an older plotly: its figures would be paired with the old library
    # if the file were kept (as plotly's own include_plotlyjs="directory" does).
    (out / "plotly.min.js").write_text("/* plotly.js v1.0.0 */")
    build_report(study, out)
    import plotly.offline

    assert (out / "plotly.min.js").read_text() == plotly.offline.get_plotlyjs()


@pytest.mark.e2e
@pytest.mark.skipif(chromium.CHROMIUM is None, reason="needs chromium: apt-get install -y chromium")
def test_every_figure_is_drawn_from_file_urls_by_the_relative_plotly_js(tmp_path: Path) -> None:
    study = rf.single_objective(tmp_path / "sweep", n=20)
    index = build_report(study, tmp_path / "sweep" / "report")
    for page in [index, index.parent / "slice.html"]:
        figures = page.read_text().count("Plotly.newPlot(")
        # Plotly.newPlot marks each div it has drawn "js-plotly-plot": all of them drew, so
        # plotly.min.js loaded from beside the page over file:// (networking is off).
        assert _drawn(page, tmp_path / f"profile-{page.stem}") == figures > 0, page.name
    # Without the file nothing draws: the pages depend on exactly that relative load.
    (index.parent / "plotly.min.js").unlink()
    assert _drawn(index, tmp_path / "profile-none") == 0


def _drawn(page: Path, profile: Path) -> int:
    proc = chromium.run(page, profile, "--dump-dom")
    assert "</html>" in proc.stdout, proc.stderr[-2000:]
    return len(re.findall(r'class="[^"]*\bjs-plotly-plot\b', proc.stdout))
