#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for tests: `test-cluster.sh start DIR`
# installs Slurm and munge if missing (Debian packages; needs root), writes a configuration
# under DIR, starts munged, slurmctld and slurmd, waits until the node is idle and prints the
# SLURM_CONF to export. `test-cluster.sh stop DIR` stops the daemons it started.
# There is no systemd here: the daemons are started by hand. The node claims 8 CPUs
# (SlurmdParameters=config_overrides) so a 3-task job is not left pending on 2 cores.
set -euo pipefail
cmd="${1:?usage: test-cluster.sh start|stop DIR}"
dir="$(mkdir -p "${2:?usage: test-cluster.sh start|stop DIR}" && cd "$2" && pwd)"
conf="$dir/slurm.conf"

stop() {
  for pid in "$dir"/slurmd.pid "$dir"/slurmctld.pid; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  rm -f "$dir"/slurmd.pid "$dir"/slurmctld.pid
}

if [ "$cmd" = stop ]; then
  stop
  exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "test-cluster.sh: Slurm is not installed and this is not root" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
fi

# munge: one key, one daemon, run as the munge user
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- /usr/sbin/munged
fi

host="$(hostname -s)"
mkdir -p "$dir/state" "$dir/spool"
cat > "$conf" <<CONF
ClusterName=brainfit-test
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
NodeName=${host} NodeAddr=127.0.0.1 CPUs=8 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$conf"
stop
/usr/sbin/slurmctld -f "$conf"
/usr/sbin/slurmd -f "$conf"
for _ in $(seq 1 100); do
  if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
    echo "SLURM_CONF=$conf"
    exit 0
  fi
  sleep 0.2
done
echo "test-cluster.sh: the node never became idle; see $dir/slurmctld.log and $dir/slurmd.log" >&2
sinfo >&2 || true
exit 1
