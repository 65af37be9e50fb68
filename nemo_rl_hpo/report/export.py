"""``nemo-rl-hpo export``: a study as CSV, one row per trial (params, metrics, job records)."""

from __future__ import annotations

import csv
from typing import IO, TYPE_CHECKING, Any

from nemo_rl_hpo.sweep import records

if TYPE_CHECKING:
    import optuna


def export_csv(study: optuna.Study, out: IO[str]) -> int:
    """Write one row per trial; return the number of rows."""
    from nemo_rl_hpo.report.trials import SweepInfo, duration_s, trial_metrics, trial_params

    info = SweepInfo.from_study(study)
    trials = study.get_trials(deepcopy=False)
    value_cols = [o if o.startswith("value") else f"value:{o}" for o in info.objectives]
    params: dict[str, None] = {}
    metrics: dict[str, None] = {}
    pbt: dict[str, None] = {}
    rows_params = []
    for t in trials:
        p = trial_params(t)
        rows_params.append(p)
        params.update(dict.fromkeys(p))
        metrics.update(dict.fromkeys(trial_metrics(t)))
        pbt.update(
            dict.fromkeys(
                k
                for k in t.user_attrs
                if k.startswith(records.PBT_PREFIX) and k != records.PBT_PARAMS
            )
        )
    extra = [
        records.JOB_DIR,
        records.SLURM_JOB_ID,
        records.NODE,
        records.FAIL_REASON,
        records.PRUNED_AT_STEP,
        records.LAST_STEP,
    ]
    header = [
        "number",
        "state",
        *value_cols,
        *(f"param:{k}" for k in params),
        *(f"metric:{k}" for k in metrics),
        "datetime_start",
        "datetime_complete",
        "duration_s",
        *extra,
        *pbt,
    ]
    writer = csv.writer(out)
    writer.writerow(header)
    for t, p in zip(trials, rows_params, strict=True):
        m = trial_metrics(t)
        values = list(t.values) if t.values else [None] * len(value_cols)
        row: list[Any] = [t.number, t.state.name, *values]
        row += [p.get(k) for k in params]
        row += [m.get(k) for k in metrics]
        row += [t.datetime_start, t.datetime_complete, duration_s(t)]
        row += [t.user_attrs.get(k) for k in extra]
        row += [t.user_attrs.get(k) for k in pbt]
        writer.writerow(["" if v is None else v for v in row])
    return len(trials)
