#!/usr/bin/env bash
# Runs a load-balanced Iris cluster on one host, in the foreground: N `iris serve` replicas on
# free loopback ports, HAProxy (deploy/haproxy) in front of them for gRPC and the HTTP API,
# and with --prometheus a Prometheus scraping every replica and the balancer.
#
# usage: deploy/local/run-cluster.sh --replicas N --model DIR --grpc-port P --http-port Q
#          --state-dir D [--prometheus] [--prometheus-port PP] [--affinity]
#          [--hash-balance-factor F=150] [--stats-port S] [--check-inter 1s] [--iris BIN]
#          [--host 127.0.0.1] [--prestop-delay 0.2] [-- extra `iris serve` arguments]
#
# P and Q are the balancer's gRPC and HTTP ports (0 = a free one; see D/cluster.json).
# D receives replicas.json (each replica's pid, ports and log), balancer.pid, cluster.json,
# the logs and the generated haproxy.cfg; D/ready appears once every replica is UP in the
# balancer. SIGTERM or Ctrl-C drains: the balancer stops accepting connections, every replica
# drains (streams in flight finish, up to --drain-timeout), then everything exits; nothing is
# left running. deploy/local/replica.sh restarts, stops or kills one replica meanwhile.
# Needs: haproxy (2.6), socat; prometheus with --prometheus.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
. "$here/cluster-lib.sh"

N="" MODEL="" grpc_port="" http_port="" STATE="" prometheus=0 prom_port=0 affinity=0
factor=150 stats_port=0 check_inter=1s IRIS=${IRIS_BIN:-} HOST=127.0.0.1 PRESTOP_DELAY=0.2
EXTRA=()
usage() { sed -n '5,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --replicas) N=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --grpc-port) grpc_port=$2; shift 2 ;;
    --http-port) http_port=$2; shift 2 ;;
    --state-dir) STATE=$2; shift 2 ;;
    --prometheus) prometheus=1; shift ;;
    --prometheus-port) prom_port=$2; shift 2 ;;
    --affinity) affinity=1; shift ;;
    --hash-balance-factor) factor=$2; shift 2 ;;
    --stats-port) stats_port=$2; shift 2 ;;
    --check-inter) check_inter=$2; shift 2 ;;
    --iris) IRIS=$2; shift 2 ;;
    --host) HOST=$2; shift 2 ;;
    --prestop-delay) PRESTOP_DELAY=$2; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    -h | --help) usage 0 ;;
    *) echo "run-cluster.sh: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$N" ] && [ -n "$MODEL" ] && [ -n "$grpc_port" ] && [ -n "$http_port" ] && [ -n "$STATE" ] || usage
[[ "$N" =~ ^[1-9][0-9]*$ ]] || cl_die "--replicas must be a positive integer"
[ -d "$MODEL" ] || cl_die "no model directory $MODEL"
MODEL=$(cd "$MODEL" && pwd)
if [ -z "$IRIS" ]; then
  if [ -x "$repo/build/server/iris" ]; then IRIS=$repo/build/server/iris
  else IRIS=$(command -v iris || true); fi
fi
[ -x "$IRIS" ] || cl_die "no iris binary (build it, or pass --iris BIN)"
command -v haproxy >/dev/null || cl_die "haproxy is needed (apt-get install haproxy)"
command -v socat >/dev/null || cl_die "socat is needed (apt-get install socat)"
if [ "$prometheus" -eq 1 ]; then command -v prometheus >/dev/null || cl_die "prometheus is needed for --prometheus"; fi
for a in "${EXTRA[@]}"; do
  case "$a" in --host | --host=* | --port | --port=* | --http-port | --http-port=* | --model | --model=*)
    cl_die "$a is set by run-cluster.sh, not an extra argument" ;;
  esac
done
# The replicas' drain timeout bounds how long a stop may take.
DRAIN_TIMEOUT=30
for ((i = 0; i < ${#EXTRA[@]}; i++)); do
  case "${EXTRA[$i]}" in
    --drain-timeout | --shutdown-timeout) DRAIN_TIMEOUT=${EXTRA[$((i + 1))]} ;;
    --drain-timeout=* | --shutdown-timeout=*) DRAIN_TIMEOUT=${EXTRA[$i]#*=} ;;
  esac
done
START_TIMEOUT=60

mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
if [ -f "$STATE/balancer.pid" ] && kill -0 "$(cat "$STATE/balancer.pid")" 2>/dev/null; then
  cl_die "$STATE belongs to a running cluster (balancer pid $(cat "$STATE/balancer.pid"))"
fi
rm -rf "$STATE"/replica-*.pid "$STATE"/replica-*.ports "$STATE/ready" "$STATE/balancer.pid" \
  "$STATE/prometheus.pid" "$STATE/haproxy.sock" "$STATE/prometheus-data"
{ declare -p N MODEL IRIS HOST EXTRA DRAIN_TIMEOUT START_TIMEOUT PRESTOP_DELAY; } >"$STATE/cluster.env"

# A port nothing listens on now (for the ports given as 0).
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/$HOST/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  cl_die "no free port found"
}
[ "$grpc_port" != 0 ] || grpc_port=$(free_port)
[ "$http_port" != 0 ] || http_port=$(free_port)
[ "$stats_port" != 0 ] || stats_port=$(free_port)

haproxy_pid="" prom_pid="" stopping=0
shutdown() {
  local rc=${1:-0} k t0
  ((stopping)) && return
  stopping=1
  trap '' INT TERM
  rm -f "$STATE/ready"
  cl_log "draining"
  # The balancer stops accepting connections; requests in flight through it continue.
  if [ -n "$haproxy_pid" ]; then kill -USR1 "$haproxy_pid" 2>/dev/null || true; fi
  for ((k = 0; k < N; k++)); do
    local pid
    pid=$(cl_replica_pid "$k")
    if cl_is_replica "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for ((k = 0; k < N; k++)); do cl_stop_replica "$k" TERM; done
  if [ -n "$haproxy_pid" ]; then
    t0=$SECONDS
    while kill -0 "$haproxy_pid" 2>/dev/null && ((SECONDS - t0 < 10)); do sleep 0.05; done
    kill -KILL "$haproxy_pid" 2>/dev/null || true
    wait "$haproxy_pid" 2>/dev/null || true
  fi
  if [ -n "$prom_pid" ]; then
    kill -TERM "$prom_pid" 2>/dev/null || true
    t0=$SECONDS
    while kill -0 "$prom_pid" 2>/dev/null && ((SECONDS - t0 < 10)); do sleep 0.05; done
    kill -KILL "$prom_pid" 2>/dev/null || true
    wait "$prom_pid" 2>/dev/null || true
  fi
  rm -f "$STATE/balancer.pid" "$STATE/prometheus.pid" "$STATE/haproxy.sock"
  cl_log "stopped"
  exit "$rc"
}
trap 'shutdown 0' INT TERM
trap 'shutdown $?' EXIT  # also after a failure (cl_die): stop whatever was started

cl_start_all

replica_args=()
for ((k = 0; k < N; k++)); do
  read -r g h <"$STATE/replica-$k.ports"
  replica_args+=(--replica "r$k=$HOST:$g:$h")
done
render=(--grpc-port "$grpc_port" --http-port "$http_port" --bind "$HOST" --stats-port "$stats_port"
  --stats-socket "$STATE/haproxy.sock" --hash-balance-factor "$factor" --check-inter "$check_inter"
  --hard-stop-after "$((${DRAIN_TIMEOUT%.*} + 5))s")
[ "$affinity" -eq 0 ] || render+=(--affinity)
"$repo/deploy/haproxy/render.sh" "${render[@]}" "${replica_args[@]}" >"$STATE/haproxy.cfg"
haproxy -q -c -f "$STATE/haproxy.cfg" || cl_die "haproxy rejects $STATE/haproxy.cfg"
setsid haproxy -db -f "$STATE/haproxy.cfg" >>"$STATE/haproxy.log" 2>&1 </dev/null &
haproxy_pid=$!
echo "$haproxy_pid" >"$STATE/balancer.pid"

if [ "$prometheus" -eq 1 ]; then
  [ "$prom_port" != 0 ] || prom_port=$(free_port)
  {
    echo "# Generated by deploy/local/run-cluster.sh: every replica's /metrics and HAProxy's."
    echo "global:"
    echo "  scrape_interval: 5s"
    echo "  evaluation_interval: 5s"
    echo "scrape_configs:"
    echo "  - job_name: iris"
    echo "    metrics_path: /metrics"
    echo "    static_configs:"
    for ((k = 0; k < N; k++)); do
      read -r g h <"$STATE/replica-$k.ports"
      echo "      - targets: ['$HOST:$h']"
      echo "        labels: {replica: r$k}"
    done
    echo "  - job_name: haproxy"
    echo "    metrics_path: /metrics"
    echo "    static_configs:"
    echo "      - targets: ['$HOST:$stats_port']"
  } >"$STATE/prometheus.yml"
  setsid prometheus --config.file="$STATE/prometheus.yml" --storage.tsdb.path="$STATE/prometheus-data" \
    --web.listen-address="$HOST:$prom_port" >>"$STATE/prometheus.log" 2>&1 </dev/null &
  prom_pid=$!
  echo "$prom_pid" >"$STATE/prometheus.pid"
fi

# Ready once HAProxy's checks have every replica UP (and Prometheus answers).
t0=$SECONDS
for ((k = 0; k < N; k++)); do
  while [ "$(cl_server_status "$k" 2>/dev/null || true)" != UP ]; do
    kill -0 "$haproxy_pid" 2>/dev/null || { cl_log "haproxy exited; see $STATE/haproxy.log"; shutdown 1; }
    if ((SECONDS - t0 > 30)); then cl_log "replica $k not UP in the balancer after 30s"; shutdown 1; fi
    sleep 0.1
  done
done
if [ -n "$prom_pid" ]; then
  until curl -sf "http://$HOST:$prom_port/-/ready" >/dev/null; do
    kill -0 "$prom_pid" 2>/dev/null || { cl_log "prometheus exited; see $STATE/prometheus.log"; shutdown 1; }
    if ((SECONDS - t0 > 60)); then cl_log "prometheus not ready after 60s"; shutdown 1; fi
    sleep 0.2
  done
fi
prom_json=null
[ -z "$prom_pid" ] || prom_json=$prom_port
cat >"$STATE/cluster.json" <<JSON
{"host": "$HOST", "grpc_port": $grpc_port, "http_port": $http_port, "stats_port": $stats_port,
 "stats_socket": "$STATE/haproxy.sock", "balancer_pid": $haproxy_pid, "prometheus_port": $prom_json,
 "prometheus_pid": ${prom_pid:-null}, "replicas": $N, "affinity": $([ "$affinity" -eq 1 ] && echo true || echo false)}
JSON
touch "$STATE/ready"
cl_log "ready: gRPC on $HOST:$grpc_port, HTTP on $HOST:$http_port, stats on http://$HOST:$stats_port/stats${prom_pid:+, Prometheus on http://$HOST:$prom_port}"

# Foreground until a signal (or the balancer dies).
while :; do
  wait "$haproxy_pid" 2>/dev/null && rc=0 || rc=$?
  if ((stopping)); then break; fi
  if ! kill -0 "$haproxy_pid" 2>/dev/null; then
    cl_log "haproxy exited unexpectedly ($rc); see $STATE/haproxy.log"
    haproxy_pid=""
    shutdown 1
  fi
done
