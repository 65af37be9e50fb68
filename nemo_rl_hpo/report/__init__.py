"""Results files, plots and the offline HTML report of a study.

``write_results`` is cheap (no plotting import); ``build_report`` imports plotly and matplotlib
when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nemo_rl_hpo.report.results import JSON_NAME, YAML_NAME, results_dict, write_results

if TYPE_CHECKING:
    import optuna


def build_report(study: optuna.Study, out_dir: str | Path) -> Path:
    """Write ``out_dir/index.html`` and every plot; see :mod:`nemo_rl_hpo.report.build`."""
    from nemo_rl_hpo.report import build

    return build.build_report(study, out_dir)


__all__ = ["JSON_NAME", "YAML_NAME", "build_report", "results_dict", "write_results"]
