#!/usr/bin/env bash
# Start a single-node SLURM cluster (munged, slurmctld, slurmd) whose files all live in DIR; print its
# SLURM_CONF=DIR/slurm.conf line on stdout once `sinfo` shows the node idle. tests/slurm/stop.sh DIR stops it.
#
#   tests/slurm/start.sh DIR        # e.g. DIR=$(mktemp -d); then export SLURM_CONF=DIR/slurm.conf
#
# Needs root (the daemons run as root, SlurmUser=root) and installs slurm-wlm and munge with apt-get when
# missing. Ports are picked free, so two clusters on one machine do not meet. On failure: one line on stderr
# saying why, exit 1, and nothing left running.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:?usage: start.sh DIR}
fail() { echo "cannot start the test SLURM cluster: $1" >&2; "$here/stop.sh" "$dir" >/dev/null 2>&1 || true; exit 1; }
[ "$(id -u)" = 0 ] || { echo "cannot start the test SLURM cluster: not root (the daemons run as root); run the SLURM tests as root" >&2; exit 1; }
"$here/install.sh" || exit 1
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge"
chmod 700 "$dir" "$dir/munge"
host=$(hostname -s)
# the CPUs slurmd finds (it refuses to register with more), not nproc: nproc answers OMP_NUM_THREADS when it is set
cpus=$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -1)
cpus=${cpus:-$(nproc --all)}
free_mb=$(awk '/MemAvailable/ {print int($2 / 1024)}' /proc/meminfo)
memory=$(( free_mb * 3 / 4 ))  # a bit below the free memory: jobs asking more are rejected by sbatch
read -r ctld_port slurmd_port < <(python3 -c "
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(('127.0.0.1', 0))
print(*(s.getsockname()[1] for s in socks))")

cat > "$dir/slurm.conf" <<CONF
# Written by tests/slurm/start.sh: one node, no accounting, no cgroups, everything under $dir.
# Partition debug runs jobs; partition down never does (a job that cannot start).
ClusterName=featxtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/slurmd-%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$dir/plugstack.conf
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
MinJobAge=60
KillWait=5
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=down Nodes=$host MaxTime=INFINITE State=DOWN
CONF
: > "$dir/plugstack.conf"
export SLURM_CONF=$dir/slurm.conf

[ -f "$dir/munge/munge.key" ] || mungekey --create --keyfile="$dir/munge/munge.key" >/dev/null 2>&1 \
    || dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$dir/munge/munge.key"

start() {  # NAME COMMAND...: in the background, in its own session; its pid in $dir/NAME.run
    local name=$1; shift
    setsid "$@" >"$dir/log/$name.out" 2>&1 < /dev/null &
    echo $! > "$dir/$name.run"
}
start munged munged --foreground --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --log-file="$dir/log/munged.log" --pid-file="$dir/munge/munged.pid" --seed-file="$dir/munge/munged.seed"
for _ in $(seq 100); do [ -S "$dir/munge/munge.socket" ] && break; sleep 0.1; done
[ -S "$dir/munge/munge.socket" ] || fail "munged did not start: $(tail -1 "$dir/log/munged.out" "$dir/log/munged.log" 2>/dev/null | grep -v '^==' | tail -1)"
start slurmctld slurmctld -D -c -f "$dir/slurm.conf"
start slurmd slurmd -D -N "$host" -f "$dir/slurm.conf"

state=""
for _ in $(seq 120); do
    state=$(sinfo -h -N -n "$host" -p debug -o %t 2>/dev/null | head -1 || true)
    [ "$state" = idle ] && break
    for name in slurmctld slurmd; do
        kill -0 "$(cat "$dir/$name.run")" 2>/dev/null \
            || fail "$name exited: $(grep -v '^$' "$dir/log/$name.out" "$dir/log/$name.log" 2>/dev/null | tail -1)"
    done
    sleep 0.5
done
[ "$state" = idle ] || fail "node $host is '${state:-not reported}' after 60 s, not idle; see $dir/log/"
echo "SLURM_CONF=$dir/slurm.conf"
