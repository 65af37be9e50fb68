"""What a sweep leaves in its directory at the end: results files, report and summary."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna

from nemo_rl_hpo.sweep import storage as st

log = logging.getLogger(__name__)


def write_outputs(
    study: optuna.Study,
    sweep_dir: Path,
    started_at: datetime,
    raw_config: Mapping[str, Any],
    write_report: bool,
) -> None:
    """Results files (always), the report (``write_report``) and the summary block (logged and
    ``summary.txt``); a failure is a warning."""
    sweep_cfg = dict(raw_config)
    if sweep_cfg.get("storage"):
        sweep_cfg["storage"] = st.mask(str(sweep_cfg["storage"]))
    ws = sweep_cfg.get("warm_start")
    if isinstance(ws, Mapping) and ws.get("storage"):
        sweep_cfg["warm_start"] = {**ws, "storage": st.mask(str(ws["storage"]))}
    try:
        from nemo_rl_hpo.report.results import write_results

        write_results(
            study,
            sweep_dir,
            sweep_config=sweep_cfg,
            started_at=started_at,
            finished_at=datetime.now(),
        )
    except ImportError:
        log.warning("results writer not available")
    except Exception as e:
        log.warning("could not write results: %s", e)
    if write_report:
        try:
            from nemo_rl_hpo.report import build_report

            build_report(study, sweep_dir / "report")
        except ImportError:
            log.warning("report builder not available")
        except Exception as e:
            log.warning("could not write the report: %s", e)
    try:  # last, so that it is what the user sees when the sweep ends
        from nemo_rl_hpo.report.summary import write_summary

        for line in write_summary(study, sweep_dir):
            log.info("%s", line)
    except Exception as e:
        log.warning("could not write the summary: %s", e)
