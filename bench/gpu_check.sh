#!/usr/bin/env bash
# GPU check, short and self-contained (~2-4 min on one modern GPU): what a CPU machine cannot test.
#
#   bench/gpu_check.sh                 # from anywhere; uses the python on PATH (the project's venv)
#   PYTHON=.venv/bin/python OUT_DIR=/tmp/gpu_check bench/gpu_check.sh
#
# 1. A short sweep with one trial per GPU (hydra/launcher=local, gpus_per_trial=1, n_jobs = the
#    GPUs): every trial COMPLETE, each ran on one device of its own (the `devices` it recorded).
# 2. The supervised trial's CUDA paths: precision=bf16 and precision=fp16 (GradScaler), device=cuda.
# 3. The GRPO trial's CUDA paths (trial=grpo): precision=bf16 and precision=fp16, device=cuda.
# Prints one line per step and ends with "gpu_check: OK"; any failure stops it with
# "gpu_check: FAIL ..." and a non-zero exit. Without a CUDA device it fails at once, saying so.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python}
OUT=${OUT_DIR:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$OUT"
STEP="start"
trap 'echo "gpu_check: FAIL at step: $STEP (logs in $OUT)" >&2' ERR

STEP="CUDA device"
N=$("$PY" - <<'EOF'
import os, sys
import torch
if not torch.cuda.is_available():
    sys.exit(
        "gpu_check: FAIL: no CUDA device here (torch.cuda.is_available() is False; "
        f"torch {torch.__version__}, CUDA build {torch.version.cuda}, "
        f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}); "
        "run this script on a machine with an NVIDIA GPU."
    )
n = torch.cuda.device_count()
names = ", ".join(torch.cuda.get_device_name(i) for i in range(n))
print(f"gpu_check: {n} CUDA device(s): {names}; torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"bf16 supported: {torch.cuda.is_bf16_supported()}", file=sys.stderr)
print(n)
EOF
) || { trap - ERR; exit 2; }
echo "gpu_check: output in $OUT"

STEP="sweep with gpus_per_trial=1"
TRIALS=$(( N < 2 ? 3 : 2 * N ))
"$PY" train.py -m hydra/launcher=local hydra.launcher.gpus_per_trial=1 \
    hydra.sweeper.n_jobs="$N" hydra.sweeper.n_trials="$TRIALS" hydra.sweeper.write_report=false \
    hydra.sweep.dir="$OUT/sweep" device=cuda precision=fp32 \
    max_steps=60 eval_interval=20 checkpoint_interval=0 > "$OUT/sweep.log" 2>&1
"$PY" - "$OUT/sweep" "$N" <<'EOF'
import sys
import optuna
sweep, n = sys.argv[1], int(sys.argv[2])
study = optuna.load_study(study_name="train", storage=f"sqlite:///{sweep}/optuna.db")
rows = [(t.number, t.state.name, t.user_attrs.get("devices"), t.value) for t in study.trials]
for r in rows:
    print(f"  trial {r[0]}: {r[1]} on CUDA_VISIBLE_DEVICES={r[2]} val_loss={r[3]}")
bad = [r for r in rows if r[1] != "COMPLETE" or not r[2] or len(r[2]) != 1]
used = {r[2][0] for r in rows if r[2]}
if bad or len(used) != n:
    sys.exit(f"gpu_check: FAIL: sweep trials {bad} (devices used: {sorted(used)} of {n})")
print(f"gpu_check: sweep OK: {len(rows)} trials, one GPU each, {len(used)} GPUs used")
EOF

for p in bf16 fp16; do
    STEP="supervised trial precision=$p device=cuda"
    "$PY" train.py trial=supervised device=cuda precision="$p" max_steps=60 eval_interval=20 \
        checkpoint_interval=0 hydra.run.dir="$OUT/supervised_$p" > "$OUT/supervised_$p.log" 2>&1
    echo "gpu_check: supervised $p OK: $(grep -E 'step 60:' "$OUT/supervised_$p.log" | tail -1 | sed 's/.*- //')"
done

for p in bf16 fp16; do
    STEP="GRPO trial precision=$p device=cuda"
    "$PY" train.py trial=grpo device=cuda precision="$p" sft.max_num_steps=5 \
        grpo.max_num_steps=20 grpo.val_period=10 checkpointing.enabled=false \
        hydra.run.dir="$OUT/grpo_$p" > "$OUT/grpo_$p.log" 2>&1
    echo "gpu_check: GRPO $p OK: $(grep -iE 'val_reward' "$OUT/grpo_$p.log" | tail -1 | sed 's/.*- //')"
done

trap - ERR
echo "gpu_check: OK"
