#!/usr/bin/env bash
# Stop the test SLURM cluster started by start.sh DIR: cancel its jobs, then end slurmd, slurmctld and munged
# (each started in its own session, so its whole process group, job steps included). Safe to run twice.
set -uo pipefail
dir=${1:?usage: stop.sh DIR}
export SLURM_CONF=$dir/slurm.conf
if [ -f "$dir/slurmctld.run" ] && kill -0 "$(cat "$dir/slurmctld.run")" 2>/dev/null; then
    scancel --user="$(id -un)" 2>/dev/null
    for _ in $(seq 40); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.25; done
fi
descendants() {  # PID: its child processes, recursively (slurmctld's slurmscriptd leaves its process group)
    local child
    for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$child"; descendants "$child"; done
}
for name in slurmd slurmctld munged; do
    [ -f "$dir/$name.run" ] || continue
    pid=$(cat "$dir/$name.run")
    children=$(descendants "$pid")
    kill -TERM -- "-$pid" $children 2>/dev/null
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" $children 2>/dev/null
    rm -f "$dir/$name.run"
done
exit 0
