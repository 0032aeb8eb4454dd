#!/usr/bin/env bash
# Install the Debian packages of the single-node test SLURM (slurmctld, slurmd, sbatch ... and munge) when missing.
# Needs root and apt-get; prints one line saying why not otherwise. Used by start.sh and .ci/run.
set -euo pipefail
missing=()
for command in slurmctld slurmd sbatch munged mungekey; do
    command -v "$command" >/dev/null 2>&1 || missing+=("$command")
done
[ ${#missing[@]} -eq 0 ] && exit 0
fail() { echo "cannot install SLURM (${missing[*]} missing): $1" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "not root; run as root, or install slurm-wlm and munge with your package manager"
command -v apt-get >/dev/null 2>&1 || fail "no apt-get; install slurm-wlm and munge with your package manager"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if ! { apt-get update -q && apt-get install -y -q --no-install-recommends slurm-wlm munge; } >"$log" 2>&1; then
    reason=$(grep -E "^(E|Err):" "$log" | tail -1)
    rm -f "$log"
    fail "apt-get install slurm-wlm munge failed: ${reason:-see the output of apt-get}"
fi
rm -f "$log"
