#!/usr/bin/env bash
# A real single-node SLURM cluster (munge, MariaDB, slurmdbd, slurmctld, slurmd) for tests.
#
#   tests/slurm/cluster.sh install        # apt-get the Debian packages if missing (root)
#   tests/slurm/cluster.sh up   DIR       # write configs under DIR, start the daemons, wait for "idle"
#   tests/slurm/cluster.sh down DIR       # cancel jobs, stop the daemons by their PID files
#
# The configuration files are written under DIR and linked from /etc/slurm/, where every
# SLURM command looks (the executor plugin's job steps drop SLURM_CONF from the environment,
# so a private path would not reach `srun`); `up` refuses to replace a slurm.conf it did not
# write, `down` removes the links. Every daemon keeps its state, logs and PID file under DIR
# and listens on 127.0.0.1 only (ports from CSL_SLURM_PORT, default 16817..16819, and 16820
# for MariaDB). Works without systemd and cgroups: proctrack/linuxproc, task/none. The node
# advertises placeholder GPUs (gres.conf files linked to /dev/null), one per CPU, so jobs
# submitted with --gpus=N are scheduled; they run on the CPU.
set -euo pipefail

PORT=${CSL_SLURM_PORT:-16817}
DB_PORT=$((PORT + 3))
CLUSTER=csltest
PACKAGES=(slurm-wlm slurmdbd mariadb-server munge)
ETC=/etc/slurm
CONFS=(slurm.conf gres.conf slurmdbd.conf)
MARK="# written by tests/slurm/cluster.sh"

log() { echo "cluster.sh: $*" >&2; }
trap 'log "failed at line $LINENO: $BASH_COMMAND"' ERR
die() { log "$*"; exit 1; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll every 0.2 s until COMMAND succeeds; 1 on timeout.
wait_for() {
    local limit=$1 what=$2 start=$SECONDS
    shift 2
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS - start >= limit)); then log "timed out after ${limit}s waiting for $what"; return 1; fi
        sleep 0.2
    done
}

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pidfiles FILE...: SIGTERM to each live PID, wait up to 15 s for all, SIGKILL the rest;
# the (possibly stale) PID files are removed.
stop_pidfiles() {
    local pids=() f p i
    for f in "$@"; do
        [[ -f $f ]] || continue
        p=$(cat "$f")
        kill -TERM "$p" 2>/dev/null && pids+=("$p")
        rm -f "$f"
    done
    for i in $(seq 75); do
        any_alive "${pids[@]}" || return 0
        sleep 0.2
    done
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}

any_alive() {
    local p
    for p in "$@"; do kill -0 "$p" 2>/dev/null && return 0; done
    return 1
}

cmd_install() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || { log "packages present"; return 0; }
    [[ $(id -u) == 0 ]] || die "need root to install ${missing[*]}"
    command -v apt-get >/dev/null || die "no apt-get: install ${missing[*]} by hand"
    log "installing ${missing[*]}"
    # policy-rc.d 101: the packages' maintainer scripts must not try to start services.
    local policy=/usr/sbin/policy-rc.d created=0
    [[ -e $policy ]] || { printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created=1; }
    local rc=0
    timeout 120 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 480 \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
    ((created)) && rm -f "$policy"
    return $rc
}

write_configs() {
    local dir=$1 node hw cpus mem
    # slurmd -C: "NodeName=<host> CPUs=.. Boards=.. SocketsPerBoard=.. CoresPerSocket=.. ThreadsPerCore=.. RealMemory=.."
    hw=$(slurmd -C | head -1)
    node=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' <<<"$hw")
    cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
    mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
    mem=$((mem * 9 / 10))  # keep 10% for the OS
    mkdir -p "$dir"/{state,spool,log,db}
    cat >"$dir/slurm.conf" <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
KillWait=5
# jobs are not requeued unless submitted with --requeue (the SLURM profile's slurm-requeue)
JobRequeue=0
# a requeued job waits cred_expire seconds (default 120) before it may start again
AuthInfo=cred_expire=5
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$((PORT + 2))
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
${hw% RealMemory=*} RealMemory=$mem NodeAddr=127.0.0.1 Gres=gpu:$cpus State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=$((mem / cpus))
EOF
    # Placeholder GPUs: SLURM counts a GPU per distinct device file, so each is a link to /dev/null.
    mkdir -p "$dir/dev" && : >"$dir/gres.conf"
    for i in $(seq 0 $((cpus - 1))); do
        ln -sfn /dev/null "$dir/dev/gpu$i"
        echo "Name=gpu File=$dir/dev/gpu$i" >>"$dir/gres.conf"
    done
    cat >"$dir/slurmdbd.conf" <<EOF
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
SlurmUser=root
AuthType=auth/munge
PidFile=$dir/slurmdbd.pid
LogFile=$dir/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm-test
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$dir/slurmdbd.conf"  # slurmdbd refuses a config that others can read
}

start_munge() {
    local dir=$1
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "munged already running: using it"
        return 0
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 755 /run/munge
    rm -f /run/munge/munged.pid /run/munge/munge.socket.2*  # stale files of a killed daemon
    if [[ ! -f /etc/munge/munge.key ]]; then  # the package creates it; an image may have dropped it
        mungekey --create --keyfile /etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    fi
    runuser -u munge -- /usr/sbin/munged
    echo /run/munge/munged.pid >"$dir/munged.started"  # down stops munged only if up started it
    wait_for 10 munged sh -c 'munge -n | unmunge' || die "munged did not start"
}

start_mariadb() {
    local dir=$1
    mariadb-install-db --user=root --datadir="$dir/db" --auth-root-authentication-method=socket \
        --skip-test-db >"$dir/log/mariadb-install.log" 2>&1
    mariadbd --user=root --datadir="$dir/db" --socket="$dir/mysqld.sock" --port="$DB_PORT" \
        --bind-address=127.0.0.1 --pid-file="$dir/mariadb.pid" --log-error="$dir/log/mariadb.log" \
        --skip-log-bin --innodb-buffer-pool-size=64M >/dev/null 2>&1 &
    wait_for 30 MariaDB mariadb --socket="$dir/mysqld.sock" -u root -e "SELECT 1" || die "see $dir/log/mariadb.log"
    mariadb --socket="$dir/mysqld.sock" -u root -e "
        CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm-test';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

node_idle() { sinfo -h -o %T | grep -qx idle; }

# link_configs DIR: /etc/slurm/<conf> -> DIR/<conf>, unless a foreign slurm.conf is there.
link_configs() {
    local dir=$1 f
    # (a dangling link, left by a run whose DIR is gone, fails -e and is replaced)
    if [[ -e $ETC/slurm.conf ]] && ! grep -qx "$MARK" "$ETC/slurm.conf"; then
        die "$ETC/slurm.conf exists and was not written by this script: not touching this machine's SLURM"
    fi
    mkdir -p "$ETC"
    for f in "${CONFS[@]}"; do ln -sfn "$dir/$f" "$ETC/$f"; done
}

unlink_configs() {
    local dir=$1 f
    for f in "${CONFS[@]}"; do
        [[ -L $ETC/$f && $(readlink "$ETC/$f") == "$dir/$f" ]] && rm -f "$ETC/$f"
    done
    return 0
}

cmd_up() {
    local dir=$1
    command -v slurmctld >/dev/null || die "SLURM is not installed (run: $0 install)"
    alive "$dir/slurmctld.pid" && die "a cluster is already running from $dir (run: $0 down $dir)"
    rm -rf "$dir"/{state,spool,log,db,dev}  # only what an earlier `up` made
    write_configs "$dir"
    link_configs "$dir"
    start_munge "$dir"
    start_mariadb "$dir"
    slurmdbd
    wait_for 30 slurmdbd sacctmgr -i list cluster || die "see $dir/log/slurmdbd.log"
    # slurmctld registers itself with slurmdbd, but only for a cluster that exists there.
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
    slurmctld -i
    slurmd
    wait_for 60 "the node to be idle" node_idle || die "see $dir/log/slurm{ctld,d}.log"
    log "up: $(sinfo -h -o '%P %D %T %G')"
}

cmd_down() {
    local dir=$1
    if alive "$dir/slurmctld.pid"; then
        scancel --full "--clusters=$CLUSTER" --user="$(id -un)" 2>/dev/null || true
        # let slurmd kill the job steps before it goes
        wait_for 10 "jobs to end" sh -c '[ -z "$(squeue -h -o %i)" ]' || true
    fi
    local files=("$dir"/{slurmd,slurmctld,slurmdbd,mariadb}.pid)
    [[ -f $dir/munged.started ]] && files+=("$(cat "$dir/munged.started")") && rm -f "$dir/munged.started"
    stop_pidfiles "${files[@]}"
    unlink_configs "$dir"
    log "down"
}

case ${1:-} in
    install) cmd_install ;;
    up) [[ -n ${2:-} ]] || die "usage: $0 up DIR"; cmd_up "$(realpath -m "$2")" ;;
    down) [[ -n ${2:-} ]] || die "usage: $0 down DIR"; cmd_down "$(realpath -m "$2")" ;;
    *) die "usage: $0 install | up DIR | down DIR" ;;
esac
