#!/usr/bin/env bash
# A one-node SLURM cluster on this machine for the test suite (munge + slurmctld + slurmd from
# Debian's packages, installed with apt-get when missing and running as root).
#   slurm/local_cluster.sh start    # prints: export SLURM_CONF=...
#   slurm/local_cluster.sh status
#   slurm/local_cluster.sh stop
set -euo pipefail
STATE=${SSL_BENCH_SLURM_DIR:-/tmp/ssl-bench-slurm}
CONF=$STATE/slurm.conf

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then return; fi
  if [ "$(id -u)" != 0 ]; then echo "slurm-wlm and munge are missing; install them (apt-get install slurm-wlm munge) or run as root" >&2; exit 1; fi
  echo "installing slurm-wlm and munge with apt-get ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_conf() {
  mkdir -p "$STATE"/{spool,state,log}
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
  cat >"$CONF" <<CONF
ClusterName=ssl-bench-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldPort=${SSL_BENCH_SLURMCTLD_PORT:-6817}
SlurmdPort=${SSL_BENCH_SLURMD_PORT:-6818}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
MpiDefault=none
ReturnToService=2
JobRequeue=1
EnforcePartLimits=ALL
KillWait=10
MinJobAge=600
InactiveLimit=0
OverTimeLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
MaxArraySize=1001
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
  : # no cgroup.conf: linuxproc tracking and task/none need no cgroups
}

start() {
  install_packages
  if [ -f "$STATE/slurmctld.pid" ] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null; then
    echo "export SLURM_CONF=$CONF"; return
  fi
  write_conf
  mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
  [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
  chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  chmod 0400 /etc/munge/munge.key; chmod 0755 /run/munge
  pgrep -x munged >/dev/null || su -s /bin/sh munge -c "/usr/sbin/munged" || /usr/sbin/munged --force
  export SLURM_CONF=$CONF
  slurmctld -f "$CONF"
  slurmd -f "$CONF"
  for _ in $(seq 1 60); do
    if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then echo "export SLURM_CONF=$CONF"; return; fi
    scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
    sleep 0.5
  done
  echo "the local SLURM node did not come up; see $STATE/log" >&2; exit 1
}

stop() {
  for d in slurmd slurmctld; do
    [ -f "$STATE/$d.pid" ] && kill "$(cat "$STATE/$d.pid")" 2>/dev/null || true
  done
  sleep 1
  rm -rf "$STATE"
}

status() {
  export SLURM_CONF=$CONF
  sinfo 2>/dev/null && squeue 2>/dev/null || { echo "not running"; exit 1; }
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
