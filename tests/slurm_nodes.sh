#!/usr/bin/env bash
# A Slurm cluster of separate hosts on this machine, for the multi-node tests:
#
#   bash tests/slurm_nodes.sh start [--nodes N]   # N hosts (default 2), up when it returns
#   bash tests/slurm_nodes.sh exec CMD ...        # run CMD on the first host (sbatch, squeue, ...)
#   bash tests/slurm_nodes.sh on K CMD ...        # run CMD on host K (1..N)
#   bash tests/slurm_nodes.sh stop                # daemons by pid, namespaces, links: all of it
#
# Each host is a network namespace with its own address (10.77.0.K/24 on its link `rds0`), its own
# hostname (a UTS namespace: PREFIX-nK) and a mount namespace that shows its own /etc/hosts and this
# cluster's /etc/slurm; the links meet on a bridge in one more namespace (PREFIX-hub), so traffic runs
# only between these hosts: no address, route or link is added outside the namespaces made here, and
# they have no default route. The file system is this machine's, so every host sees the same run
# dirs, stores and caches (a cluster's shared file system). Host 1 runs slurmctld and a slurmd, the
# others a slurmd each; munged is this cluster's own (its socket under the cluster dir). The one-node
# cluster of tests/slurm_cluster.sh can run beside it.
set -euo pipefail
DIR=${SLURM_NODES_DIR:-/tmp/road_ds_slurm_nodes}
PREFIX=${SLURM_NODES_PREFIX:-rds}
NET=10.77.0
cmd=${1:?usage: slurm_nodes.sh start [--nodes N] | exec CMD... | on K CMD... | stop}
shift

holder() { cat "$DIR/$PREFIX-n$1.pid"; }
on_host() {  # on_host K CMD...: CMD inside host K's network, hostname and mount namespaces
  local k=$1
  shift
  SLURM_CONF=/etc/slurm/slurm.conf nsenter --target "$(holder "$k")" --net --uts --mount --wd="$PWD" -- "$@"
}

stop() {
  if [[ -d $DIR ]]; then
    for pidfile in "$DIR"/run/*.pid "$DIR"/munged.pid "$DIR"/"$PREFIX"-n*.pid; do
      [[ -f $pidfile ]] || continue
      kill "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    done
  fi
  for ns in $(ip netns list | awk '{print $1}'); do
    if [[ $ns == "$PREFIX"-n* || $ns == "$PREFIX-hub" ]]; then
      # whatever still runs on the host (job steps, ranks) ends with it
      ip netns pids "$ns" | xargs -r kill -9 2>/dev/null || true
      ip netns del "$ns"
    fi
  done
}

case $cmd in
  stop) stop; exit 0 ;;
  exec) on_host 1 "$@"; exit ;;
  on) k=${1:?on K CMD...}; shift; on_host "$k" "$@"; exit ;;
  start) ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac

nodes=2
if [[ ${1:-} == --nodes ]]; then nodes=${2:?--nodes N}; fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
   || ! command -v sbatch >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

stop
rm -rf "$DIR"
mkdir -p "$DIR"/{state,log,run,munge,etc-slurm} /etc/slurm
chmod 755 "$DIR/munge"  # munged wants its socket dir open to all (the key stays 0400)

# the hosts: one namespace each, a veth link from each to the bridge in the hub namespace
ip netns add "$PREFIX-hub"
ip -n "$PREFIX-hub" link add rdsbr type bridge
ip -n "$PREFIX-hub" link set rdsbr up
{
  echo "127.0.0.1 localhost"
  for k in $(seq 1 "$nodes"); do echo "$NET.$k $PREFIX-n$k"; done
} > "$DIR/hosts"
for k in $(seq 1 "$nodes"); do
  ns=$PREFIX-n$k
  ip netns add "$ns"
  ip link add rds0 netns "$ns" type veth peer name "port$k" netns "$PREFIX-hub"
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$NET.$k/24" dev rds0
  ip -n "$ns" link set rds0 up
  ip -n "$PREFIX-hub" link set "port$k" master rdsbr up
  # a process that holds the host's hostname and mounts; daemons and commands enter it with nsenter
  # shellcheck disable=SC2016  # expanded by the inner bash, from its arguments
  # (nsenter, not `ip netns exec`, which mounts a sysfs of its own: slurmd needs /sys/fs/cgroup)
  nsenter --net="/run/netns/$ns" unshare --uts --mount --propagation private bash -c '
    hostname "$1"; mount --bind "$2/hosts" /etc/hosts; mount --bind "$2/etc-slurm" /etc/slurm
    exec sleep infinity' _ "$ns" "$DIR" > /dev/null 2>&1 &
  echo $! > "$DIR/$ns.pid"
  mkdir -p "$DIR/spool-$ns"
done
for k in $(seq 1 "$nodes"); do  # each holder has set its hostname
  for _ in $(seq 1 50); do
    [[ $(on_host "$k" hostname 2>/dev/null) == "$PREFIX-n$k" ]] && break
    sleep 0.1
  done
done

# munge: this cluster's own daemon and key; Slurm finds its socket through AuthInfo
dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1 count=1024 2>/dev/null
chmod 400 "$DIR/munge/munge.key"
munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
  --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/seed"

cpus=$(nproc)
mem=$(( ($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024) / nodes ))
node_names="$PREFIX-n[1-$nodes]"
cat > "$DIR/etc-slurm/slurm.conf" <<EOF
ClusterName=road_ds_nodes
SlurmctldHost=$PREFIX-n1($NET.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool-%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
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
EOF
for k in $(seq 1 "$nodes"); do
  echo "NodeName=$PREFIX-n$k NodeAddr=$NET.$k NodeHostname=$PREFIX-n$k CPUs=$cpus RealMemory=$mem State=UNKNOWN" >> "$DIR/etc-slurm/slurm.conf"
done
echo "PartitionName=nodes Nodes=$node_names Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO" >> "$DIR/etc-slurm/slurm.conf"

on_host 1 slurmctld -i
for k in $(seq 1 "$nodes"); do on_host "$k" slurmd -N "$PREFIX-n$k"; done
for _ in $(seq 1 60); do
  up=$(on_host 1 sinfo -h -N -o '%N %t' 2>/dev/null | grep -cE ' (idle|mix|alloc)$' || true)
  if (( up == nodes )); then
    echo "slurm cluster up: $nodes hosts $node_names on $NET.0/24 ($DIR)"
    exit 0
  fi
  sleep 1
done
echo "slurm did not come up; see $DIR/log" >&2
on_host 1 sinfo -N >&2 || true
exit 1
