#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the sbatch tests: `start` installs Debian's slurmctld,
# slurmd and munge (and shellcheck, for the script tests) when missing, writes a slurm.conf for this host, starts the
# daemons and waits for the node; `stop` ends exactly the daemons `start` started, by their pids.
set -euo pipefail
DIR=${SLURM_TEST_DIR:-/tmp/road_ds_slurm}
cmd=${1:?usage: slurm_cluster.sh start|stop}

stop() {
  for name in slurmd slurmctld munged; do
    if [[ -f $DIR/$name.pid ]]; then
      kill "$(cat "$DIR/$name.pid")" 2>/dev/null || true
      rm -f "$DIR/$name.pid"
    fi
  done
}

if [[ $cmd == stop ]]; then
  stop
  exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
   || ! command -v sbatch >/dev/null || ! command -v shellcheck >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurmctld slurmd slurm-client munge shellcheck >/dev/null
fi

stop
mkdir -p "$DIR"/{spool,state,log,munge} /run/munge /etc/slurm
host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))

# munge: a key of our own, a socket in the usual place (the Slurm client libraries look there)
[[ -f /etc/munge/munge.key ]] || { mkdir -p /etc/munge; dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null; }
chmod 400 /etc/munge/munge.key
munged --force --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/seed"

cat > /etc/slurm/slurm.conf <<EOF
ClusterName=road_ds_test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MaxJobCount=1000
KillWait=30
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
cp /etc/slurm/slurm.conf "$DIR/slurm.conf"

slurmctld -i
slurmd
for _ in $(seq 1 60); do
  if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
    echo "slurm cluster up: node $host, $cpus CPUs ($DIR)"
    exit 0
  fi
  sleep 1
done
echo "slurm did not come up; see $DIR/log" >&2
sinfo >&2 || true
exit 1
