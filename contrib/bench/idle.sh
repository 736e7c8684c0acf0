#!/usr/bin/env bash
# Idle cost of many repositories: a two-node lab serving REPOS idle repositories (default
# 1000) at the default stargate.sync.interval (30s). Once the replica's first sweep is over,
# the replica's agent is watched for SECONDS (default 120): its CPU time (its threads and the
# git processes it ran) as a share of one core, its resident memory, and the syncs it ran;
# then one write to one repository, and how long it takes to reach the replica. Against:
# what polling every repository once per interval with plain `git ls-remote` would cost
# (measured on 50 of them, same run).
# The hourly sweep is not in that window: its share is estimated from the agent's CPU for 500
# idle syncs. Usage: contrib/bench/idle.sh [REPOS] [SECONDS]   (stargate-hook on PATH)
set -euo pipefail
count=${1:-1000} seconds=${2:-120}
. "$(dirname "$0")/lib.sh"
"${lab[@]}" up --nodes 2 --net 127.79.7 >/dev/null
# COUNT repositories on both nodes, copied from one made like the lab's (git init and
# config for each would take minutes), then the agents start again: the leader starts their
# journals when elected, as after an upgrade.
for n in a b; do "${lab[@]}" kill "$n" agent TERM; done
sleep 1
for n in a b; do
  t=$work/lab/$n/template.git
  git -c core.hooksPath=/dev/null init -q --bare "$t"
  git --git-dir="$t" config core.hooksPath "$(git --git-dir="$work/lab/$n/repos/kv.git" config core.hooksPath)"
  python3 -c 'import shutil, sys
for i in range(1, int(sys.argv[3]) + 1):
    shutil.copytree(sys.argv[1], "%s/r%05d.git" % (sys.argv[2], i), symlinks=True)' "$t" "$work/lab/$n/repos" "$count"
  rm -rf "$t"
done
"${lab[@]}" start a agent
sleep 2
"${lab[@]}" start b agent
t=$(date +%s)
until leader=$("${lab[@]}" leader 2>/dev/null) && [ -n "$leader" ]; do
  sleep 1; [ $(( $(date +%s) - t )) -lt 600 ] || { echo "bench: no leader" >&2; exit 1; }
done
replica=$([ "$leader" = a ] && echo b || echo a)
lip=$(cat "$work/lab/$leader/ip") rip=$(cat "$work/lab/$replica/ip")
agent=$(pgrep -f -P "$(cat "$work/lab/$replica/agent.pid")" 'stargate agent' || pgrep -f -n "GIT_CONFIG_GLOBAL=$work/lab/$replica" || true)
[ -n "$agent" ] || agent=$(cat "$work/lab/$replica/agent.pid")
syncs() { curl -s "http://$rip:8080/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["replication"]["counters"]["syncs"])'; }
ticks() { awk '{ print $14 + $15 + $16 + $17 }' "/proc/$agent/stat"; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$agent/status"; }
# The first sweep: every repository once (BENCH_SETTLE=<seconds>: wait that long instead, for
# agents that poll every repository and so never settle).
t0=$(date +%s) last=-1
[ -z "${BENCH_SETTLE:-}" ] || sleep "$BENCH_SETTLE"
while [ -z "${BENCH_SETTLE:-}" ]; do
  s=$(syncs); [ "$s" = "$last" ] && [ "$s" -ge "$count" ] && break
  last=$s; sleep 5
  [ $(( $(date +%s) - t0 )) -lt 1800 ] || { echo "bench: the first sweep did not end ($s syncs)" >&2; exit 1; }
done
swept=$(( $(date +%s) - t0 ))
s0=$(syncs) c0=$(ticks) w0=$(date +%s%N)
sleep "$seconds"
s1=$(syncs) c1=$(ticks) w1=$(date +%s%N)
hz=$(getconf CLK_TCK)
cpu=$(awk "BEGIN{printf \"%.2f\", 100 * ($c1 - $c0) / $hz / (($w1 - $w0) / 1e9)}")
rss=$(( $(rss_kb) / 1024 ))
# One write still arrives at once.
git clone -q "git://$lip/r00001.git" "$work/w" 2>/dev/null
git -C "$work/w" commit -q --allow-empty -m one
start=$(date +%s%N)
git -C "$work/w" push -q origin HEAD:refs/heads/main
want=$(git -C "$work/w" rev-parse HEAD)
until [ "$(git --git-dir="$work/lab/$replica/repos/r00001.git" rev-parse -q --verify main 2>/dev/null)" = "$want" ]; do
  sleep 0.01
  [ $(( ($(date +%s%N) - start) / 1000000 )) -lt 30000 ] || { echo "bench: the write did not arrive" >&2; exit 1; }
done
arrived=$(( ($(date +%s%N) - start) / 1000000 ))
# The sweep (each repository once per stargate.sync.sweepInterval, 1 h) is not in that window:
# what one idle sync costs the agent, measured on 500 of them asked for as the leader's
# signals ask (UDP, within the agent's budget of 200 per 100 ms).
n_idle=$(( count < 500 ? count : 500 ))
s2=$(syncs) k0=$(ticks)
for ((i = 1; i <= n_idle; i++)); do
  printf 'stargate-sync r%05d.git\n' "$i" >"/dev/udp/$rip/8080"
  (( i % 100 )) || sleep 0.15
done
t=$(date +%s)
until [ "$(syncs)" -ge $(( s2 + n_idle )) ]; do
  sleep 0.5; [ $(( $(date +%s) - t )) -lt 120 ] || { echo "bench: the signalled syncs did not run" >&2; exit 1; }
done
k1=$(ticks)
idle_ms=$(awk "BEGIN{printf \"%.2f\", 1000 * ($k1 - $k0) / $hz / $n_idle}")
sweep=$(awk "BEGIN{printf \"%.2f\", 100 * $idle_ms / 1000 * $count / 3600}")
# Plain git: one ls-remote per repository per interval, measured on 50 (or all there are).
polled=$(( count < 50 ? count : 50 ))
p0=$(awk '{ print $14 + $15 + $16 + $17 }' /proc/$$/stat) q0=$(date +%s%N)
for r in $(seq -f 'r%05g' 1 "$polled"); do git ls-remote "git://$lip/$r.git" >/dev/null; done
p1=$(awk '{ print $14 + $15 + $16 + $17 }' /proc/$$/stat) q1=$(date +%s%N)
per=$(awk "BEGIN{printf \"%.2f\", ($q1 - $q0) / 1e6 / $polled}")
plain=$(awk "BEGIN{printf \"%.1f\", 100 * ($p1 - $p0) / $hz / $polled * $count / 30}")
echo "idle, $count repositories, default interval 30s: replica agent $cpu % of a core over $seconds s ($(( s1 - s0 )) syncs), RSS $rss MB; first sweep ${swept} s; a write reached the replica in $arrived ms"
echo "  the hourly sweep: $idle_ms ms of the agent's CPU per idle sync ($n_idle measured), $sweep % of a core spread over the hour"
echo "BENCH idle_cpu_$count $cpu $plain %"
echo "BENCH idle_sweep_$count $sweep - %"
echo "BENCH idle_rss_$count $rss - MB"
echo "BENCH idle_write_$count $arrived - ms"
echo "  plain git polling each repository once per 30 s (git ls-remote, $per ms each): $plain % of a core (client side only)"
