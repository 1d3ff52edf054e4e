#!/usr/bin/env bash
# A real multi-node Ray cluster on this one machine: a head and N worker nodes, each its
# own `ray start` (own raylet, object store, ports, temp dir) with its own CPU count and a
# custom resource naming it (fanout_node_0 is the head, fanout_node_1..N the workers), so
# a task pinned with resources={"fanout_node_2": 1} provably runs on that node.
#
# It stops only what it started: every `ray start` runs in a new session (setsid) whose id
# is recorded in the state file, next to the node's own --temp-dir; `down` signals the
# processes of those sessions (checked to belong to this cluster's temp dir) and never runs
# `ray stop`, which would kill every Ray process on the machine.
#
# Token authentication is on (RAY_AUTH_MODE=token on every node, with a token of this
# cluster's own in the state dir): Ray >= 2.52 turns it on for a head by itself whenever
# ~/.ray/auth_token exists, and then workers and drivers without the token are refused;
# being explicit makes the cluster behave the same on every machine. Drivers need the three
# variables that `up` prints.
set -euo pipefail

PROG=${0##*/}
STATE_DIR=${FANOUT_CLUSTER_DIR:-/tmp/fanout-cluster}
case $STATE_DIR in
  /*) ;;
  *) STATE_DIR=$PWD/$STATE_DIR ;;
esac
STATE=$STATE_DIR/cluster.state
TOKEN=$STATE_DIR/auth_token
GRACE=${FANOUT_CLUSTER_GRACE:-10}

usage() {
  cat <<EOF
usage: $PROG up [--workers N] [--cpus-per-node C] [--port P] [--object-store-mb M]
       $PROG down
       $PROG status

A Ray cluster of one head and N worker nodes on this machine, each node a separate
\`ray start\` offering C CPUs and a resource naming it (fanout_node_0 = head,
fanout_node_1..N = workers). \`up\` prints what a driver needs on stdout (progress goes
to stderr), one VAR=value a line: RAY_ADDRESS=127.0.0.1:P, RAY_AUTH_MODE=token and
RAY_AUTH_TOKEN_PATH (the cluster's token), so: export \$($PROG up)

  up      start the cluster (does nothing if it is already up); exit 0 when every node
          has joined
  down    stop every process that \`up\` started, and only those; remove its files
  status  print the address, the nodes alive and their resources; exit 0 if up, 1 if not

options of up:
  --workers N          worker nodes besides the head (default 2)
  --cpus-per-node C    logical CPUs each node offers to tasks (default 2; a worker actor
                       reserves 0.05, a CPU-bound tool task num_cpus)
  --port P             the head's GCS port; the address is 127.0.0.1:P (default 6380)
  --object-store-mb M  object store of each node, in MiB (default 256)

environment:
  FANOUT_CLUSTER_DIR   state directory, one cluster per directory (default /tmp/fanout-cluster)
  PYTHON               the interpreter that has ray (default: python3 on PATH)
  RAY                  the ray executable (default: the one next to PYTHON, else on PATH)
  FANOUT_CLUSTER_GRACE seconds down waits after SIGTERM before SIGKILL (default 10)

exit status: 0 ok, 1 failure (status: not up), 2 bad arguments
EOF
}

die_usage() {
  echo "$PROG: $*" >&2
  usage >&2
  exit 2
}
die() {
  echo "$PROG: error: $*" >&2
  exit 1
}
log() { echo "$PROG: $*" >&2; }

# ---------------------------------------------------------------- arguments

[[ $# -ge 1 ]] || die_usage "missing command (up, down or status)"
[[ $STATE_DIR != *[[:space:]]* ]] || die_usage "FANOUT_CLUSTER_DIR must not contain whitespace: '$STATE_DIR'"
[[ $GRACE =~ ^[0-9]{1,4}$ ]] || die_usage "FANOUT_CLUSTER_GRACE must be a whole number of seconds, got '$GRACE'"
CMD=$1
shift
case $CMD in
  up | down | status) ;;
  -h | --help | help)
    usage
    exit 0
    ;;
  *) die_usage "unknown command '$CMD'" ;;
esac

WORKERS=2
CPUS=2
PORT=6380
STORE_MB=256
EXPLICIT=" "
while [[ $# -gt 0 ]]; do
  opt=$1
  case $opt in
    -h | --help)
      usage
      exit 0
      ;;
    --workers=* | --cpus-per-node=* | --port=* | --object-store-mb=*)
      val=${opt#*=}
      opt=${opt%%=*}
      ;;
    --workers | --cpus-per-node | --port | --object-store-mb)
      [[ $# -ge 2 ]] || die_usage "$opt needs a value"
      val=$2
      shift
      ;;
    *) die_usage "unknown argument '$opt'" ;;
  esac
  shift
  [[ $CMD == up ]] || die_usage "$opt is an option of 'up', not of '$CMD'"
  [[ $val =~ ^[0-9]{1,6}$ ]] || die_usage "$opt needs a whole number, got '$val'"
  val=$((10#$val))
  case $opt in
    --workers)
      ((val <= 64)) || die_usage "--workers must be at most 64, got $val"
      WORKERS=$val
      ;;
    --cpus-per-node)
      ((val >= 1 && val <= 1024)) || die_usage "--cpus-per-node must be 1..1024, got $val"
      CPUS=$val
      ;;
    --port)
      ((val >= 1024 && val <= 65535)) || die_usage "--port must be 1024..65535, got $val"
      # Ray gives ports 10002-19999 to its worker processes and refuses a GCS port there.
      ((val < 10002 || val > 19999)) || die_usage "--port must be outside 10002..19999 (Ray's worker ports), got $val"
      PORT=$val
      ;;
    --object-store-mb)
      ((val >= 80)) || die_usage "--object-store-mb must be at least 80 (Ray's minimum is 75 MiB), got $val"
      STORE_MB=$val
      ;;
  esac
  EXPLICIT+="$opt "
done

# ---------------------------------------------------------------- tools

resolve_tools() {
  # With only RAY given, use the interpreter of its #! line, so that both agree.
  if [[ -z ${PYTHON:-} && -n ${RAY:-} && -f $RAY ]]; then
    local first=
    IFS= read -r first <"$RAY" || true
    first=${first#\#!}
    first=${first%% *}
    if [[ $first == /* && -x $first && ${first##*/} != env ]]; then PYTHON=$first; fi
  fi
  PYTHON=${PYTHON:-$(command -v python3 || command -v python || true)}
  [[ -n $PYTHON ]] || die "no python3 on PATH; set PYTHON=/path/to/python (the one that has ray)"
  local exe
  exe=$("$PYTHON" -c 'import sys; print(sys.executable)' 2>/dev/null) ||
    die "cannot run PYTHON=$PYTHON"
  if [[ -z ${RAY:-} ]]; then
    if [[ -x ${exe%/*}/ray ]]; then
      RAY=${exe%/*}/ray
    else
      RAY=$(command -v ray || true)
    fi
  fi
  [[ -n $RAY && -x $RAY ]] ||
    die "no ray executable next to $exe nor on PATH: install ray in that environment (pip install 'ray>=2.9'), activate it, or set RAY=/path/to/ray"
  "$PYTHON" -c 'import ray' 2>/dev/null ||
    die "$PYTHON cannot import ray: set PYTHON to the interpreter of the environment that has ray"
}

free_port() {
  "$PYTHON" -c 'import socket
s = socket.socket()
s.bind(("", 0))
print(s.getsockname()[1])'
}

port_is_free() {
  "$PYTHON" - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT leftover is free
try:
    s.bind(("", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
}

# ---------------------------------------------------------------- state

# One key=value a line, written whole (rename) so that status never reads half a file.
# It is parsed, never sourced.
write_state() {
  local tmp
  tmp=$(mktemp "$STATE_DIR/.cluster.state.XXXXXX")
  {
    echo "ADDRESS=127.0.0.1:$PORT"
    echo "PORT=$PORT"
    echo "WORKERS=$WORKERS"
    echo "CPUS_PER_NODE=$CPUS"
    echo "OBJECT_STORE_MB=$STORE_MB"
    echo "TEMP_DIR=$TEMP_DIR"
    echo "AUTH_TOKEN_PATH=$TOKEN"
    echo "SIDS=$SIDS"
    echo "PYTHON=$PYTHON"
    echo "RAY=$RAY"
    echo "STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  } >"$tmp"
  mv -f "$tmp" "$STATE"
}

state_get() {
  local line
  line=$(grep -m1 "^$1=" "$STATE" 2>/dev/null || true)
  printf '%s' "${line#*=}"
}

# What a driver (ray.init, fanout run --ray, ray status) needs to join this cluster.
print_driver_env() {
  echo "RAY_ADDRESS=127.0.0.1:$PORT"
  echo "RAY_AUTH_MODE=token"
  echo "RAY_AUTH_TOKEN_PATH=$TOKEN"
}

# The environment of every Ray command here: this cluster's token (RAY_AUTH_TOKEN would
# take precedence over the file, so it goes), no RAY_ADDRESS of the caller's, no usage
# stats. An external command (not a function), so that its redirections stay in the child.
RAY_ENV=(env -u RAY_ADDRESS -u RAY_AUTH_TOKEN RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$TOKEN"
  RAY_USAGE_STATS_ENABLED=0)

load_state() {
  PORT=$(state_get PORT)
  WORKERS=$(state_get WORKERS)
  CPUS=$(state_get CPUS_PER_NODE)
  STORE_MB=$(state_get OBJECT_STORE_MB)
  TEMP_DIR=$(state_get TEMP_DIR)
  SIDS=$(state_get SIDS)
  [[ $PORT =~ ^[0-9]+$ && $WORKERS =~ ^[0-9]+$ ]] || die "unreadable state file $STATE"
  # A node's session id is in node-I.sid from before its `ray start` runs, and in the state
  # file once that returns: an up interrupted in between leaves only the former.
  local i sid
  for ((i = 0; i <= WORKERS; i++)); do
    sid=
    if [[ -f $STATE_DIR/node-$i.sid ]]; then sid=$(tr -d ' \n' <"$STATE_DIR/node-$i.sid"); fi
    if [[ $sid =~ ^[0-9]+$ && " $SIDS " != *" $sid "* ]]; then SIDS="${SIDS:+$SIDS }$sid"; fi
  done
  # The temp dir is one that up made (mktemp); refuse to act on anything else.
  [[ $TEMP_DIR == /*/fanout-ray.* && $TEMP_DIR != *..* ]] || die "bad TEMP_DIR in $STATE: '$TEMP_DIR'"
  # Status and down use the interpreter that started the cluster, if it is still there.
  local py
  py=$(state_get PYTHON)
  if [[ -z ${PYTHON:-} && -x $py ]]; then PYTHON=$py; fi
}

lock_state_dir() {
  mkdir -p "$STATE_DIR"
  exec 9>"$STATE_DIR/lock"
  flock -w 300 9 || die "another $PROG is working on $STATE_DIR"
}

# ---------------------------------------------------------------- processes

# Sets PIDS to every live process of this cluster, one pid a line: the members of the
# sessions that up created (one per node). A session counts once one of its members names
# this cluster's temp dir on its command line (raylet, gcs_server and the daemons do;
# workers retitle themselves ray::...), so a recycled session id cannot make us signal
# someone else's process; it stays counted for the rest of this run (VALID_SIDS), so that
# the workers a stopped raylet leaves behind for a moment are still found. With a kind
# (raylet, gcs_server, other), only the processes of that kind.
PIDS=
VALID_SIDS=" "
list_pids() {
  PIDS=
  [[ -n ${SIDS// /} ]] || return 0
  local out kind val
  out=$(ps -eo pid=,sid=,comm=,args= | T=$TEMP_DIR S=$SIDS V=$VALID_SIDS K=${1:-all} awk '
    BEGIN {
      n = split(ENVIRON["S"], a, " "); for (i = 1; i <= n; i++) want[a[i]] = 1
      n = split(ENVIRON["V"], a, " "); for (i = 1; i <= n; i++) ours[a[i]] = 1
      k = ENVIRON["K"]
    }
    ($2 in want) {
      if (index($0, ENVIRON["T"])) ours[$2] = 1
      if (k == "all" || $3 == k || (k == "other" && $3 != "raylet" && $3 != "gcs_server"))
        member[$1] = $2
    }
    END {
      for (s in ours) print "sid", s
      for (p in member) if (member[p] in ours) print "pid", p
    }')
  while read -r kind val; do
    case $kind in
      sid) [[ $VALID_SIDS == *" $val "* ]] || VALID_SIDS+="$val " ;;
      pid) PIDS+="$val"$'\n' ;;
    esac
  done <<<"$out"
  PIDS=${PIDS%$'\n'}
}

# Prints a line for each node whose session has lost its raylet (or, for the head, its
# gcs_server): the GCS notices a dead node only after its health checks time out.
lost_nodes() {
  ps -eo sid=,comm= | S=$SIDS W=$WORKERS awk '
    { have[$1 " " $2] = 1 }
    END {
      n = split(ENVIRON["S"], a, " ")
      if (n < ENVIRON["W"] + 1) print "only " n " of " ENVIRON["W"] + 1 " nodes were started"
      for (i = 1; i <= n; i++) {
        if (!((a[i] " raylet") in have)) print "node " i - 1 ": its raylet is gone"
        if (i == 1 && !((a[i] " gcs_server") in have)) print "node 0: its gcs_server is gone"
      }
    }'
}

# Processes outside those sessions that still name the temp dir (reported, not killed).
strays() {
  ps -eo pid=,args= | T=$TEMP_DIR awk -v self="$$" '
    index($0, ENVIRON["T"]) && $1 != self { print }'
}

# The pids among $@ that are still alive.
alive() {
  local p
  for p in "$@"; do
    if kill -0 "$p" 2>/dev/null; then echo "$p"; fi
  done
}

# Stops the cluster's processes in stages, as `ray stop` orders them: the raylets (their
# workers and agents follow them), then the other daemons (autoscaler monitor, log monitors,
# dashboard head), then gcs_server. A gcs_server signalled while the others still run can
# take long to flush; in this order each stage takes a second or two. A stage that outlives
# GRACE seconds gets SIGKILL: these sessions are the cluster's own.
stop_processes() {
  list_pids
  [[ -n $PIDS ]] || return 0
  log "stopping $(echo "$PIDS" | wc -l) processes (raylets, daemons, then gcs_server)"
  stop_stage raylet
  stop_stage other
  stop_stage gcs_server
  stop_stage all
  list_pids
  [[ -z $PIDS ]] || die "processes of the cluster survived SIGKILL: ${PIDS//$'\n'/ }"
}

stop_stage() {
  local kind=$1 p signaled=" " deadline=$((SECONDS + GRACE))
  while true; do
    list_pids "$kind"
    [[ -n $PIDS ]] || return 0
    ((SECONDS < deadline)) || break
    for p in $PIDS; do # new ones too: a raylet may have forked a worker meanwhile
      if [[ $signaled != *" $p "* ]]; then
        kill -TERM "$p" 2>/dev/null || true
        signaled+="$p "
      fi
    done
    sleep 0.3
  done
  log "$(echo "$PIDS" | wc -l) processes ($kind) still up after ${GRACE}s: SIGKILL"
  local pids=$PIDS
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
  deadline=$((SECONDS + 10))
  while [[ -n $pids ]] && ((SECONDS < deadline)); do
    sleep 0.2
    # shellcheck disable=SC2086
    pids=$(alive $pids)
  done
}

# Removes the cluster's files; with "keep-logs", leaves the `ray start` outputs for reading.
remove_files() {
  rm -rf -- "$TEMP_DIR"
  rm -f -- "$STATE" "$TOKEN" "$STATE_DIR"/node-*.sid
  [[ ${1:-} == keep-logs ]] || rm -f -- "$STATE_DIR"/node-*.log
}

# ---------------------------------------------------------------- nodes

# Prints a table of the cluster's nodes; exit 0 if the nodes fanout_node_0..WORKERS are all
# alive, 1 if not, 3 if the GCS cannot be reached. Connects as a short-lived driver.
show_nodes() {
  local err rc=0
  err=$(mktemp)
  "${RAY_ENV[@]}" timeout 90 "$PYTHON" - "127.0.0.1:$PORT" "$WORKERS" 2>"$err" <<'PY' || rc=$?
import logging
import socket
import sys

address, workers = sys.argv[1], int(sys.argv[2])
host, port = address.rsplit(":", 1)
try:
    socket.create_connection((host, int(port)), timeout=3).close()
except OSError as exc:
    print(f"nodes:   none (no GCS at {address}: {exc.strerror or exc})")
    sys.exit(3)

import ray

ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
try:
    nodes = ray.nodes()
finally:
    ray.shutdown()

wanted = [f"fanout_node_{i}" for i in range(workers + 1)]
rows, alive = [], set()
for n in nodes:
    res = n.get("Resources", {})
    names = [k for k in res if k.startswith("fanout_node_")]
    name = names[0] if names else "(not fanout's)"
    if n["Alive"] and name in wanted:
        alive.add(name)
    store = res.get("object_store_memory", 0) / 2**20
    rows.append((name, "yes" if n["Alive"] else "no", n["NodeManagerAddress"],
                 f"{res.get('CPU', 0):g}", f"{store:.0f} MiB", n["NodeID"][:12],
                 "head" if name == "fanout_node_0" else "worker"))
print(f"nodes:   {len(alive)}/{len(wanted)} alive")
fmt = "  {:<16} {:<6} {:<16} {:<4} {:<13} {:<13} {}"
print(fmt.format("RESOURCE", "ALIVE", "IP", "CPU", "OBJECT STORE", "NODE ID", "ROLE"))
for row in sorted(rows, key=lambda r: (r[1] != "yes", r[0])):
    print(fmt.format(*row))
sys.exit(0 if len(alive) == len(wanted) else 1)
PY
  if ((rc != 0 && rc != 1 && rc != 3)); then
    echo "nodes:   unknown (the ray.nodes() query failed, exit $rc)"
    sed 's/^/  | /' "$err" | tail -n 15
    rc=1
  fi
  rm -f "$err"
  return "$rc"
}

# Starts node $1 (0 is the head) in a session of its own; records the session id.
start_node() {
  local i=$1 log=$STATE_DIR/node-$1.log sidfile=$STATE_DIR/node-$1.sid role sid
  local -a args
  args=(start
    --num-cpus "$CPUS"
    --resources "{\"fanout_node_$i\": 1}"
    --temp-dir "$TEMP_DIR/n$i"
    --object-store-memory $((STORE_MB * 1024 * 1024))
    --dashboard-agent-listen-port "$(free_port)" # the default, 52365, would clash
    --disable-usage-stats)
  if ((i == 0)); then
    role="head"
    args+=(--head --port "$PORT" --include-dashboard=false)
    # With ray[client] installed the head also starts a client server, by default on 10001.
    if "$PYTHON" -c 'import grpc' 2>/dev/null; then
      args+=(--ray-client-server-port "$(free_port)")
    fi
  else
    role="worker $i"
    args+=(--address "127.0.0.1:$PORT")
  fi
  mkdir -p "$TEMP_DIR/n$i"
  log "starting $role: ray ${args[*]}"
  rm -f "$sidfile"
  local rc=0
  # setsid: the node's daemons (gcs_server, raylet, agents, workers) stay in a session of
  # their own, whose id the shell writes down before it becomes `ray start`.
  # shellcheck disable=SC2016 # "$$", "$0" and "$@" are the inner bash's
  "${RAY_ENV[@]}" timeout 180 \
    setsid bash -c 'ps -o sid= -p "$$" >"$0" && exec "$@"' "$sidfile" "$RAY" "${args[@]}" \
    </dev/null >"$log" 2>&1 || rc=$?
  sid=
  if [[ -f $sidfile ]]; then sid=$(tr -d ' \n' <"$sidfile"); fi
  if [[ $sid =~ ^[0-9]+$ ]]; then
    SIDS="${SIDS:+$SIDS }$sid"
    write_state
  fi
  if ((rc != 0)); then
    log "ray start ($role) failed with exit $rc; the end of $log:"
    tail -n 25 "$log" | sed 's/^/  | /' >&2
    return 1
  fi
}

# ---------------------------------------------------------------- commands

cmd_up() {
  resolve_tools
  lock_state_dir
  local want_workers=$WORKERS want_cpus=$CPUS want_port=$PORT want_store=$STORE_MB
  if [[ -f $STATE ]]; then
    local healthy=0
    if (
      load_state
      list_pids
      [[ -n $PIDS && -z $(lost_nodes) ]] && show_nodes >/dev/null
    ); then healthy=1; fi
    if ((healthy)); then
      load_state
      local diff=
      [[ $EXPLICIT != *" --workers "* || $want_workers == "$WORKERS" ]] || diff+=" --workers $WORKERS"
      [[ $EXPLICIT != *" --cpus-per-node "* || $want_cpus == "$CPUS" ]] || diff+=" --cpus-per-node $CPUS"
      [[ $EXPLICIT != *" --port "* || $want_port == "$PORT" ]] || diff+=" --port $PORT"
      [[ $EXPLICIT != *" --object-store-mb "* || $want_store == "$STORE_MB" ]] || diff+=" --object-store-mb $STORE_MB"
      [[ -z $diff ]] || die "a cluster is already up in $STATE_DIR with$diff; run '$PROG down' first"
      log "already up ($((WORKERS + 1)) nodes); nothing to do"
      print_driver_env
      return 0
    fi
    log "$STATE_DIR holds a cluster that is not (fully) up; stopping what is left of it"
    load_state
    stop_processes
    remove_files
    WORKERS=$want_workers CPUS=$want_cpus PORT=$want_port STORE_MB=$want_store
  fi

  port_is_free "$PORT" || die "port $PORT is in use on this machine; choose another with --port"
  TEMP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/fanout-ray.XXXXXX")
  # Unix socket paths (TEMP_DIR/nI/session_<date>_<pid>/sockets/plasma_store) must stay short.
  if ((${#TEMP_DIR} > 48)); then
    rmdir -- "$TEMP_DIR"
    die "TMPDIR gives too long a path ($TEMP_DIR) for Ray's Unix sockets; set TMPDIR=/tmp"
  fi
  SIDS=
  write_state
  trap 'log "interrupted; stopping what up started"; load_state; stop_processes; remove_files keep-logs; exit 130' INT TERM
  (
    umask 077
    "$PYTHON" -c 'import secrets; print(secrets.token_hex(32))' >"$TOKEN"
  )

  local i ok=1
  for ((i = 0; i <= WORKERS; i++)); do
    start_node "$i" || {
      ok=0
      break
    }
  done
  if ((ok)); then
    log "waiting for $((WORKERS + 1)) nodes to be alive"
    local deadline=$((SECONDS + 90)) out
    ok=0
    while ((SECONDS < deadline)); do
      if out=$(show_nodes); then
        ok=1
        break
      fi
      sleep 1
    done
    if ((ok)); then
      echo "$out" >&2
    else
      log "the nodes did not all join within 90s:"
      echo "$out" >&2
    fi
  fi
  if ((!ok)); then
    trap - INT TERM
    log "up failed; stopping what it started (node logs: $STATE_DIR/node-*.log)"
    stop_processes
    remove_files keep-logs
    exit 1
  fi
  trap - INT TERM
  log "up: a head and $WORKERS worker node(s); for a driver: export \$($0 up), or export these:"
  print_driver_env
}

cmd_down() {
  if [[ ! -f $STATE ]]; then
    log "no cluster in $STATE_DIR; nothing to stop"
    return 0
  fi
  lock_state_dir
  [[ -f $STATE ]] || {
    log "no cluster in $STATE_DIR; nothing to stop"
    return 0
  }
  load_state
  stop_processes
  local left
  left=$(strays)
  if [[ -n $left ]]; then
    log "warning: processes outside the cluster's sessions still use $TEMP_DIR (left alone):"
    echo "$left" | cut -c1-200 | sed 's/^/  | /' >&2
  fi
  remove_files
  rm -f -- "$STATE_DIR/lock"
  rmdir -- "$STATE_DIR" 2>/dev/null || true
  log "down: the cluster at 127.0.0.1:$PORT is stopped"
}

cmd_status() {
  if [[ ! -f $STATE ]]; then
    echo "fanout local Ray cluster: not up (no state in $STATE_DIR)"
    return 1
  fi
  load_state
  if [[ -z ${PYTHON:-} ]]; then resolve_tools; fi
  local rc=0 out lost line
  list_pids
  if [[ -z $PIDS ]]; then
    echo "fanout local Ray cluster: not up (no process left; state in $STATE; run '$PROG down' to clear it)"
    return 1
  fi
  out=$(show_nodes) || rc=$?
  lost=$(lost_nodes)
  [[ -z $lost ]] || rc=1
  if ((rc == 0)); then
    echo "fanout local Ray cluster: up"
  else
    echo "fanout local Ray cluster: not (fully) up"
  fi
  echo "address: 127.0.0.1:$PORT   (RAY_ADDRESS=127.0.0.1:$PORT)"
  echo "state:   $STATE   (ray temp dirs under $TEMP_DIR, $(echo "$PIDS" | wc -l) processes)"
  echo "$out"
  if [[ -n $lost ]]; then
    while IFS= read -r line; do echo "lost:    $line"; done <<<"$lost"
  fi
  ((rc == 0)) || return 1
}

case $CMD in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
esac
