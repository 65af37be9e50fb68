"""``optimization_results.yaml`` (hydra-optuna-sweeper's keys) and ``optimization_results.json``.

The YAML keeps exactly what hydra-optuna-sweeper writes, so scripts reading it keep working; the
JSON holds everything else a user asks after a sweep: counts by state, the Pareto front, the
command that reproduces the best trial, learning curves and, for PBT, the winning schedule.
Both are safe to write while trials still run and before any trial has completed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial

from nemo_rl_hpo.fidelity.history import record as fidelity_record
from nemo_rl_hpo.report import files
from nemo_rl_hpo.report.reproducibility import reproducibility
from nemo_rl_hpo.report.trials import (
    SweepInfo,
    best_trial,
    counts_by_state,
    duration_s,
    jsonable,
    pareto_trials,
    pbt_summary,
    reproduce_command,
    trial_metrics,
    trial_params,
)
from nemo_rl_hpo.sweep import confirm, cost, records, repeats
from nemo_rl_hpo.sweep.storage import mask

log = logging.getLogger(__name__)

YAML_NAME = "optimization_results.yaml"
JSON_NAME = "optimization_results.json"


def _mask_all(obj: Any) -> Any:
    """Mask every URL password inside a (nested) sweep config before it goes to disk."""
    if isinstance(obj, str):
        return mask(obj)
    if isinstance(obj, Mapping):
        return {str(k): _mask_all(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_mask_all(v) for v in obj]
    return obj


def _upstream_yaml(
    info: SweepInfo, trials: list[FrozenTrial], study: optuna.Study
) -> dict[str, Any]:
    """hydra-optuna-sweeper's ``_serialize_results`` keys, with empty values before any result."""
    if not info.multi_objective:
        best = best_trial(trials, study.directions)
        return {
            "name": "optuna",
            "best_params": trial_params(best) if best else {},
            "best_value": best.value if best else None,
        }
    return {
        "name": "optuna",
        "solutions": [
            {"params": trial_params(t), "values": list(t.values)}
            for t in pareto_trials(trials, study.directions)
        ],
    }


def _trial_record(t: FrozenTrial, spent: cost.Totals | None) -> dict[str, Any]:
    return {
        "number": t.number,
        "state": t.state.name,
        "values": t.values,
        "params": trial_params(t),
        "metrics": trial_metrics(t),
        "intermediate_values": {str(k): v for k, v in sorted(t.intermediate_values.items())},
        "curves": t.user_attrs.get(records.CURVES) or {},
        "duration_s": duration_s(t),
        "datetime_start": t.datetime_start,
        "datetime_complete": t.datetime_complete,
        "job_dir": t.user_attrs.get(records.JOB_DIR),
        "slurm_job_id": t.user_attrs.get(records.SLURM_JOB_ID),
        "fail_reason": t.user_attrs.get(records.FAIL_REASON),
        "pruned_at_step": t.user_attrs.get(records.PRUNED_AT_STEP),
        "cost": spent.as_dict() if spent is not None else None,
        **{k: v for k, v in t.user_attrs.items() if k.startswith(records.PBT_PREFIX)},
        **({"seeds": seeds} if (seeds := repeats.seed_records(t)) else {}),
        **({"fidelity": fid} if (fid := fidelity_record(t)) else {}),
    }


def results_dict(
    study: optuna.Study,
    *,
    trials: list[FrozenTrial] | None = None,
    sweep_config: Mapping[str, Any] | None = None,
    started_at: dt.datetime | None = None,
    finished_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """The content of ``optimization_results.json`` (JSON-safe)."""
    info = SweepInfo.from_study(study)
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    out: dict[str, Any] = {
        "study_name": info.study_name,
        "storage": info.storage,
        "sweep_dir": info.sweep_dir,
        "kind": info.kind,
        "sampler": info.sampler,
        "directions": info.directions,
        "objectives": info.objectives,
        "counts": counts_by_state(trials),
        "n_trials": len(trials),
        "started_at": started_at,
        "finished_at": finished_at,
        "written_at": dt.datetime.now().astimezone(),
        "finished": finished_at is not None,
    }
    if not info.multi_objective:
        best = best_trial(trials, study.directions)
        out["best"] = None
        if best is not None:
            out["best"] = {
                "number": best.number,
                "value": best.value,
                "params": trial_params(best),
                "metrics": trial_metrics(best),
                "job_dir": best.user_attrs.get(records.JOB_DIR),
                "command": reproduce_command(info, best),
            }
            if spread := repeats.spread(best):  # a repeated configuration: its seeds' values
                out["best"]["seeds"] = repeats.seed_records(best)
                out["best"]["spread"] = spread
    else:
        out["pareto_front"] = [
            {
                "number": t.number,
                "values": list(t.values),
                "params": trial_params(t),
                "command": reproduce_command(info, t),
            }
            for t in pareto_trials(trials, study.directions)
        ]
    if info.kind == records.KIND_PBT:
        out["pbt"] = pbt_summary(trials, study.directions[0])
    confirmed = confirm.read_confirmation(study, trials)
    if confirmed is not None:  # test-seed re-runs of the top configurations (sweep/confirm.py)
        out["confirmation"] = confirmed.as_dict()
        if confirmed.pick is not None:
            out["confirmation"]["command"] = reproduce_command(info, confirmed.pick.trial)
    out["reproducibility"] = reproducibility(study, trials, sweep_config, info.cwd)
    out["command"] = info.command
    out["cwd"] = info.cwd
    out["base_overrides"] = info.base_overrides
    out["sweep_config"] = _mask_all(dict(sweep_config)) if sweep_config is not None else None
    system_attrs = study._storage.get_study_system_attrs(study._study_id)
    by_trial = cost.trial_totals(system_attrs)
    # What the sweep cost (GPU-/CPU-hours, every job: failed and pruned trials too).
    out["cost"] = cost.study_totals(system_attrs).as_dict()
    out["budget"] = study.user_attrs.get(records.STUDY_BUDGET)
    out["trials"] = [_trial_record(t, by_trial.get(t.number)) for t in trials]
    return dict(jsonable(out))


def write_results(
    study: optuna.Study,
    sweep_dir: str | Path,
    *,
    sweep_config: Mapping[str, Any],
    started_at: dt.datetime,
    finished_at: dt.datetime | None,
) -> dict[str, Any]:
    """Write both results files into ``sweep_dir`` atomically; return the JSON content.

    Call it at the end of a sweep (``finished_at`` set) and, if you like, after each trial.
    """
    sweep_dir = Path(sweep_dir)
    trials = study.get_trials(deepcopy=False)
    info = SweepInfo.from_study(study)
    upstream = jsonable(_upstream_yaml(info, trials, study))
    files.write_text(
        sweep_dir / YAML_NAME, yaml.safe_dump(upstream, sort_keys=False, default_flow_style=False)
    )
    data = results_dict(
        study,
        trials=trials,
        sweep_config=sweep_config,
        started_at=started_at,
        finished_at=finished_at,
    )
    files.write_text(sweep_dir / JSON_NAME, json.dumps(data, indent=1) + "\n")
    log.debug("wrote %s and %s in %s", YAML_NAME, JSON_NAME, sweep_dir)
    return data
