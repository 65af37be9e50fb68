#!/usr/bin/env bash
# Run the fault tests (real PostgreSQL, a second local Slurm, a tmpfs) and keep their measured
# recovery times: one "FAULT ..." line per fault, printed only after the test's assertions
# (nothing lost, nothing counted twice, nothing left RUNNING) passed.
#
#   bench/faults.sh            # as root, in the venv; ~8 min on 2 shared cores
#   cat bench/results/faults.txt
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/results/faults.txt
log=$(mktemp)
python -m pytest -s -q -p no:cacheprovider \
    tests/test_faults_storage.py tests/test_faults_slurm.py tests/test_faults_disk.py \
    tests/test_faults_journal.py 2>&1 | tee "$log" | grep -E "^FAULT|passed|failed"
{
    echo "# bench/faults.sh, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
    grep -E "^FAULT" "$log"
    tail -1 "$log"
} >"$out"
rm -f "$log"
echo "wrote $out"
