#!/usr/bin/env bash
# Renders deploy/haproxy/haproxy.cfg.in for N `iris serve` replicas and prints the config.
# usage: deploy/haproxy/render.sh --grpc-port P --http-port Q --stats-port S --stats-socket PATH
#          [--bind ADDR=127.0.0.1] [--stats-bind ADDR=127.0.0.1] [--affinity]
#          [--hash-balance-factor F=150] [--timeout-generation 15m] [--timeout-connect 2s]
#          [--check-inter 1s] [--check-fastinter 250ms] [--check-fall 2] [--check-rise 2]
#          [--hard-stop-after 60s]
#          --replica NAME=HOST:GRPC_PORT:HTTP_PORT [--replica ...]
# Without --affinity requests go to the replica with the fewest requests in flight
# (leastconn counts streams, so this is per request for gRPC too). With --affinity, requests
# carrying `x-session-id` (an HTTP header, or gRPC metadata) hash to one replica on a
# consistent-hash ring, unless that replica already has more than F% of the average load in
# flight, in which case the next replica on the ring takes it; requests without the header
# are spread round-robin.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

grpc_port="" http_port="" stats_port="" stats_socket=""
bind=127.0.0.1 stats_bind=127.0.0.1 affinity=0 factor=150
t_gen=15m t_connect=2s inter=1s fastinter=250ms fall=2 rise=2 hard_stop=60s
replicas=()
die() { echo "render.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --grpc-port) grpc_port=$2; shift 2 ;;
    --http-port) http_port=$2; shift 2 ;;
    --stats-port) stats_port=$2; shift 2 ;;
    --stats-socket) stats_socket=$2; shift 2 ;;
    --bind) bind=$2; shift 2 ;;
    --stats-bind) stats_bind=$2; shift 2 ;;
    --affinity) affinity=1; shift ;;
    --hash-balance-factor) factor=$2; shift 2 ;;
    --timeout-generation) t_gen=$2; shift 2 ;;
    --timeout-connect) t_connect=$2; shift 2 ;;
    --check-inter) inter=$2; shift 2 ;;
    --check-fastinter) fastinter=$2; shift 2 ;;
    --check-fall) fall=$2; shift 2 ;;
    --check-rise) rise=$2; shift 2 ;;
    --hard-stop-after) hard_stop=$2; shift 2 ;;
    --replica) replicas+=("$2"); shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
[ -n "$grpc_port" ] && [ -n "$http_port" ] && [ -n "$stats_port" ] && [ -n "$stats_socket" ] ||
  die "--grpc-port, --http-port, --stats-port and --stats-socket are required"
[ ${#replicas[@]} -gt 0 ] || die "at least one --replica NAME=HOST:GRPC_PORT:HTTP_PORT"
[ "$factor" -gt 100 ] 2>/dev/null || die "--hash-balance-factor must be an integer above 100"

if [ "$affinity" -eq 1 ]; then
  balance="    balance hdr(x-session-id)
    hash-type consistent
    # A replica takes a new request only while its requests in flight stay within this
    # percentage of the average; past it the session's request goes to the next replica.
    hash-balance-factor $factor"
else
  balance="    # Least outstanding requests: in HTTP mode every request (every gRPC stream) counts.
    balance leastconn"
fi

http_servers="" grpc_servers=""
for r in "${replicas[@]}"; do
  name=${r%%=*}
  IFS=: read -r host gport hport <<<"${r#*=}"
  [ -n "$name" ] && [ -n "$host" ] && [ -n "$gport" ] && [ -n "$hport" ] || die "bad --replica $r"
  http_servers+="    server $name $host:$hport check observe layer4 error-limit 1 on-error mark-down"$'\n'
  grpc_servers+="    server $name $host:$gport proto h2 track http_replicas/$name"$'\n'
done

# Replace one @FIELD@ with a value that may span lines (no sed: values hold slashes).
content=$(cat "$here/haproxy.cfg.in")
shopt -u patsub_replacement 2>/dev/null || true  # bash 5.2: no special `&` in values
sub() { content=${content//"@$1@"/$2}; }
sub BALANCE "$balance"
sub HTTP_SERVERS "${http_servers%$'\n'}"
sub GRPC_SERVERS "${grpc_servers%$'\n'}"
sub BIND "$bind"
sub STATS_BIND "$stats_bind"
sub GRPC_PORT "$grpc_port"
sub HTTP_PORT "$http_port"
sub STATS_PORT "$stats_port"
sub STATS_SOCKET "$stats_socket"
sub TIMEOUT_GENERATION "$t_gen"
sub TIMEOUT_CONNECT "$t_connect"
sub CHECK_INTER "$inter"
sub CHECK_FASTINTER "$fastinter"
sub CHECK_FALL "$fall"
sub CHECK_RISE "$rise"
sub HARD_STOP_AFTER "$hard_stop"
if grep -q '@[A-Z_]*@' <<<"$content"; then
  die "unfilled field: $(grep -o '@[A-Z_]*@' <<<"$content" | head -1)"
fi
printf '%s\n' "$content"
