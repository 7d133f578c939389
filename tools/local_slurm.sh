#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for tests and for trying `compare --launcher submitit`.
#
#   tools/local_slurm.sh start    install slurm-wlm + munge if absent (apt-get, needs root), write the
#                                 config, start munged, slurmctld and slurmd, wait until the node is idle
#   tools/local_slurm.sh stop     cancel this cluster's jobs and stop the three daemons
#   tools/local_slurm.sh status   exit 0 and show `sinfo` when the node answers, else exit 1
#   tools/local_slurm.sh env      print `export SLURM_CONF=...` (eval it to use sbatch/squeue/sinfo)
#
# Everything (config, munge key and socket, spool, logs, pid files) lives in one state folder,
# $YOLOATTN_SLURM_DIR (default /tmp/yoloattn-slurm); nothing under /etc is changed. Clients find the
# cluster through SLURM_CONF=$YOLOATTN_SLURM_DIR/etc/slurm.conf. The daemons are started directly
# (no systemd), as root, so this works in CI containers. Configuration: proctrack/linuxproc,
# task/none, select/cons_tres (cores and memory), no accounting; SlurmctldHost is this host's short
# name, NodeAddr 127.0.0.1, CPUs and RealMemory measured here (`slurmd -C`).
# Other knobs: YOLOATTN_SLURM_TIMEOUT (seconds to wait for an idle node, default 90),
# YOLOATTN_SLURM_PORT (slurmctld port, default 6817; slurmd uses the next one).
set -euo pipefail

STATE="${YOLOATTN_SLURM_DIR:-/tmp/yoloattn-slurm}"
TIMEOUT="${YOLOATTN_SLURM_TIMEOUT:-90}"
PORT="${YOLOATTN_SLURM_PORT:-6817}"
CONF="$STATE/etc/slurm.conf"
LOG="$STATE/log"
RUN="$STATE/run"
export SLURM_CONF="$CONF"

say() { echo "local_slurm: $*" >&2; }
die() {
    say "ERROR: $*"
    say "logs: $LOG/munged.log $LOG/slurmctld.log $LOG/slurmd.log"
    for f in "$LOG/munged.log" "$LOG/slurmctld.log" "$LOG/slurmd.log"; do
        [ -s "$f" ] && { say "--- last lines of $f"; tail -n 15 "$f" >&2; }
    done
    exit 1
}

install_if_absent() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null; then
        return
    fi
    [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are not installed and this is not root: apt-get install slurm-wlm munge"
    command -v apt-get >/dev/null || die "slurm-wlm/munge missing and no apt-get here (Debian/Ubuntu only)"
    say "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >"$LOG/apt.log" 2>&1 || true
    apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$LOG/apt.log" 2>&1 \
        || die "apt-get install slurm-wlm munge failed (see $LOG/apt.log)"
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_state() { sinfo -h -N -o '%t' 2>/dev/null | head -n 1 | tr -d '*~#!%$@^-' || true; }

write_config() {
    local host cpus mem node_line
    host="$(hostname -s)"
    node_line="$(slurmd -C 2>/dev/null | head -n 1)" || true
    cpus="$(echo "$node_line" | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p')"
    cpus="${cpus:-$(nproc)}"
    mem="$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)"
    mem=$((mem * 9 / 10)) # slurmd drains a node whose real memory is below the configured one
    mkdir -p "$STATE/etc" "$STATE/spool/ctld" "$STATE/spool/d" "$LOG" "$RUN" "$STATE/munge"
    cat >"$CONF" <<EOF
# written by tools/local_slurm.sh: a one-node cluster on this machine
ClusterName=yoloattn
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/munge.socket.2
CredType=cred/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
DefMemPerCPU=$((mem / cpus))
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=5
MinJobAge=60
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    local sock="$STATE/munge/munge.socket.2"
    if pid_alive "$RUN/munged.pid"; then return; fi
    if [ ! -s "$STATE/munge/munge.key" ]; then
        dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
    fi
    chmod 700 "$STATE/munge"
    chmod 400 "$STATE/munge/munge.key"
    rm -f "$sock" "$sock.lock"
    munged --force --socket="$sock" --key-file="$STATE/munge/munge.key" --log-file="$LOG/munged.log" \
        --pid-file="$RUN/munged.pid" --seed-file="$STATE/munge/munged.seed" >>"$LOG/munged.log" 2>&1 \
        || die "munged did not start"
    for _ in $(seq 50); do [ -S "$sock" ] && return; sleep 0.1; done
    die "munged started but its socket $sock did not appear"
}

start() {
    mkdir -p "$LOG" "$RUN"
    if [ -s "$CONF" ] && pid_alive "$RUN/slurmctld.pid" && pid_alive "$RUN/slurmd.pid" \
        && [ "$(node_state)" != "" ]; then
        say "already running ($(node_state)); SLURM_CONF=$CONF"
        echo "export SLURM_CONF=$CONF"
        return
    fi
    install_if_absent
    write_config
    start_munge
    if ! pid_alive "$RUN/slurmctld.pid"; then
        slurmctld -f "$CONF" >>"$LOG/slurmctld.log" 2>&1 || die "slurmctld did not start"
    fi
    if ! pid_alive "$RUN/slurmd.pid"; then
        slurmd -f "$CONF" >>"$LOG/slurmd.log" 2>&1 || die "slurmd did not start"
    fi
    local deadline=$((SECONDS + TIMEOUT)) st="" resumed=0
    while [ "$SECONDS" -lt "$deadline" ]; do
        st="$(node_state)"
        case "$st" in
            idle | mix | alloc) break ;;
            down | drain | drng | drained | draining)
                if [ "$resumed" = 0 ]; then # a node left down by an earlier run: bring it back
                    scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
                    resumed=1
                fi
                ;;
        esac
        pid_alive "$RUN/slurmctld.pid" || die "slurmctld exited"
        pid_alive "$RUN/slurmd.pid" || die "slurmd exited"
        sleep 0.5
    done
    case "$st" in
        idle | mix | alloc) ;;
        *) die "the node is not idle after ${TIMEOUT}s (state: '${st:-no answer}'); sinfo -R: $(sinfo -R -h 2>&1 | head -n 3)" ;;
    esac
    say "up: node $(hostname -s) $st ($(sinfo -h -N -o '%c CPUs, %m MB')); logs in $LOG"
    echo "export SLURM_CONF=$CONF"
}

stop_pid() {
    local f="$RUN/$1.pid" pid
    pid_alive "$f" || { rm -f "$f"; return 0; }
    pid="$(cat "$f")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
}

stop() {
    if pid_alive "$RUN/slurmctld.pid"; then
        scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
        sleep 1
    fi
    stop_pid slurmd
    stop_pid slurmctld
    stop_pid munged
    say "stopped (state and logs kept in $STATE)"
}

status() {
    if [ -s "$CONF" ] && pid_alive "$RUN/slurmctld.pid" && [ "$(node_state)" != "" ]; then
        sinfo
        return 0
    fi
    say "not running (state folder $STATE)"
    return 1
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *)
        echo "usage: $0 start|stop|status|env" >&2
        exit 2
        ;;
esac
