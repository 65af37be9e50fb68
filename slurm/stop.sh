#!/usr/bin/env bash
# Stop the daemons slurm/start.sh started, by their recorded pids (never by name).
#
#   slurm/stop.sh            # keep the state dir (database, job ids, logs)
#   slurm/stop.sh --purge    # also delete it: the next start is a fresh cluster (job ids from 1)
set -euo pipefail

STATE=${NEMO_SLURM_DIR:-/tmp/nemo-rl-hpo-slurm}
PURGE=0
case "${1:-}" in
    --purge) PURGE=1 ;;
    "") ;;
    *) echo "slurm/stop.sh: unknown argument '$1'; use --purge or nothing." >&2; exit 2 ;;
esac
RUN=$STATE/run
if [[ ! -e $STATE/.nemo-rl-hpo-slurm ]]; then
    echo "slurm/stop.sh: $STATE is not a state dir of slurm/start.sh; nothing to stop."
    exit 0
fi

# Jobs first (slurmd), the database last, so that every daemon can flush to the next one.
for name in slurmd slurmctld slurmdbd mariadbd munged; do
    pidfile=$RUN/$name.pid
    [[ -s $pidfile ]] || continue
    pid=$(cat "$pidfile")
    # Only a pid that still runs the recorded executable is ours (pids get reused).
    exe=$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null || true)")
    # Debian installs e.g. slurmctld as a link to slurmctld-wlm.
    if [[ $exe == "$name" || $exe == "$name-wlm" ]]; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            [[ -d /proc/$pid ]] || break
            sleep 0.1
        done
        if [[ -d /proc/$pid ]]; then
            # slurmd can hang on SIGTERM once munged or slurmctld are gone.
            kill -9 "$pid" 2>/dev/null || true
        fi
        echo "slurm/stop.sh: stopped $name (pid $pid)"
    fi
    rm -f "$pidfile"
done

if [[ -s $STATE/etc-link ]]; then
    link=$(cat "$STATE/etc-link")
    if [[ -L $link && "$(readlink "$link")" == "$STATE/slurm.conf" ]]; then
        rm -f "$link"
    fi
    rm -f "$STATE/etc-link"
fi
if ((PURGE == 1)); then
    rm -rf "$STATE"
    echo "slurm/stop.sh: removed $STATE"
fi
