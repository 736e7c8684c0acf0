#!/usr/bin/env bash
# Handover time after kill -9 of the leader's agent: from the kill until the other node's
# /readyz answers 200, which includes the new leader's catch-up from the old one's
# repositories (its own part is printed too, from the agents' logs). Runs N rounds
# (default 20) on one two-node lab, restarting the killed agent between rounds, and prints
# every time, the median and the worst.
# With BENCH_LEASE=etcd the nodes lease through a local one-member etcd (etcd on PATH,
# Debian's etcd-server), with the default stargate.lease.ttl (contrib/bench/etcd.sh measures
# etcd's handovers against three members, after kill -9 and after a clean stop).
# Usage: [BENCH_LEASE=etcd] contrib/bench/failover.sh [N]   (stargate-hook on PATH)
set -euo pipefail
n=${1:-20}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
lab=("$root/contrib/lab/lab" --dir "$work")
etcd_pid=
trap '"${lab[@]}" down >/dev/null 2>&1; [ -n "$etcd_pid" ] && kill "$etcd_pid"; rm -rf "$work"' EXIT
export GIT_CONFIG_NOSYSTEM=1
if [ "${BENCH_LEASE:-file}" = etcd ]; then
  etcd --name b --data-dir "$work/etcd" --listen-client-urls http://127.79.0.100:2379 \
    --advertise-client-urls http://127.79.0.100:2379 --listen-peer-urls http://127.79.0.100:2380 \
    --initial-advertise-peer-urls http://127.79.0.100:2380 --initial-cluster b=http://127.79.0.100:2380 \
    --log-level warn >"$work/etcd.log" 2>&1 &
  etcd_pid=$!
  printf '[stargate]\n\tlock = etcd://127.79.0.100:2379/stargate/bench\n' >"$work/extra"
  export LAB_EXTRA_CONFIG=$work/extra
  sleep 2
fi
"${lab[@]}" up --nodes 2 --net 127.79.0 >/dev/null
ready() { # node -> 0 when /readyz is 200
  exec 3<>"/dev/tcp/$(cat "$work/$1/ip")/8080" 2>/dev/null || return 1
  printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3
  local line; read -r line <&3 || true; exec 3<&-
  [[ $line == *" 200 "* ]]
}
times=()
for ((i = 1; i <= n; i++)); do
  leader=$("${lab[@]}" leader)
  other=$([ "$leader" = a ] && echo b || echo a)
  start=$(date +%s%N)
  "${lab[@]}" kill "$leader" agent KILL
  until ready "$other"; do sleep 0.005; done
  t=$(( ($(date +%s%N) - start) / 1000000 ))
  times+=("$t")
  "${lab[@]}" start "$leader" agent
  sleep 0.7 # the restarted agent publishes its state and settles as passive
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
echo "handover after kill -9 (ms): ${times[*]}"
echo "median: $(echo "$sorted" | sed -n "$(( (n + 1) / 2 ))p") ms, worst: $(echo "$sorted" | tail -1) ms, runs: $n"
echo "BENCH handover_kill9_${BENCH_LEASE:-file} $(echo "$sorted" | sed -n "$(( (n + 1) / 2 ))p") - ms"
catchup=$(cat "$work"/*/agent.log | sed -n 's/.*caught up with .* in \([0-9]*\) ms$/\1/p' | sort -n)
count=$(echo "$catchup" | grep -c . || true)
[ "$count" -gt 0 ] && echo "of which catching up: median $(echo "$catchup" | sed -n "$(( (count + 1) / 2 ))p") ms, worst $(echo "$catchup" | tail -1) ms"
