#!/usr/bin/env bash
# Install the Debian packages for a single-node Slurm with accounting (idempotent).
#
#   sudo slurm/install.sh        # ~15 s the first time, ~0.1 s when everything is there
#
# apt does not start services on this machine type (policy-rc.d exits 101); slurm/start.sh
# starts every daemon itself. Needs root (apt-get).
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

missing=()
for p in "${PACKAGES[@]}"; do
    # "install ok installed" is dpkg's status for a fully configured package.
    if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]]; then
        missing+=("$p")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "slurm/install.sh: all packages present (${PACKAGES[*]})"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "slurm/install.sh: missing ${missing[*]}; run this script as root (it calls apt-get)." >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when apt cannot find a candidate for a missing package.
for p in "${missing[@]}"; do
    if ! apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        apt-get update -qq
        break
    fi
done
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "slurm/install.sh: installed ${missing[*]}"
