#!/usr/bin/env bash
# Failover after the leader's machine is powered off, to the first accepted write, with the
# nodes replicating over TRANSPORT (default ssh: a fetch-only key, strict host keys, as
# contrib/ssh sets it up). A --netns lab of two nodes (root): each round powers the leader
# off (`lab stop`: every process killed with -9, its link down, so its address answers
# nothing), then pushes a new branch to the other node's git daemon from the hub every 50 ms
# until one is accepted. The time from the power-off to that acceptance includes the lease
# handover and the new leader's catch-up, which gives up on the silent machine within
# stargate.catchup.connectTimeout. The old leader is restarted and caught up between rounds.
# Prints every round, the median and the worst.
# Usage: [TRANSPORT=git|ssh|https] contrib/bench/poweroff.sh [N]   (root; stargate-hook on PATH)
set -euo pipefail
n=${1:-10}
transport=${TRANSPORT:-ssh}
[ "$(id -u)" = 0 ] || { echo "poweroff.sh: needs root (network namespaces)" >&2; exit 1; }
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
lab=("$root/contrib/lab/lab" --dir "$work/lab")
trap '"${lab[@]}" down >/dev/null 2>&1; rm -rf "$work"' EXIT
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=$work/gitconfig HOME=$work LC_ALL=C
printf '[user]\n\tname = Bench\n\temail = bench@example.com\n' >"$GIT_CONFIG_GLOBAL"
"${lab[@]}" up --nodes 2 --netns --net 10.79.7 --transport "$transport" --owner $$ >/dev/null
ip() { cat "$work/lab/$1/ip"; }
head_of() { git --git-dir="$work/lab/$1/repos/kv.git" rev-parse -q --verify refs/heads/main 2>/dev/null || true; }
hub() { "${lab[@]}" exec hub "$@"; }
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

leader=$("${lab[@]}" leader)
hub git clone -q "git://$(ip "$leader")/kv.git" "$work/c" 2>/dev/null
git -C "$work/c" commit -q --allow-empty -m base
hub git -C "$work/c" push -q origin HEAD:refs/heads/main
times=()
for ((i = 1; i <= n; i++)); do
  leader=$("${lab[@]}" leader)
  other=$([ "$leader" = a ] && echo b || echo a)
  # Both nodes hold the client's commit: the write pushed below is only a new name for it.
  for ((t = 0; t < 300; t++)); do [ "$(head_of "$other")" = "$(head_of "$leader")" ] && break; sleep 0.1; done
  [ "$(head_of "$other")" = "$(head_of "$leader")" ] || {
    echo "bench: $other did not catch up with $leader; its agent's log ends:" >&2
    tail -20 "$work/lab/$other/agent.log" >&2
    exit 1
  }
  start=$(date +%s%N)
  "${lab[@]}" stop "$leader"
  until hub git -C "$work/c" push -q "git://$(ip "$other")/kv.git" "HEAD:refs/heads/poweroff-$i" 2>/dev/null; do
    [ "$(ms "$start")" -lt 60000 ] || { echo "bench: no write accepted by $other within 60 s" >&2; exit 1; }
    sleep 0.05
  done
  took=$(ms "$start")
  times+=("$took")
  echo "round $i: $leader powered off, $other accepted a write after $took ms"
  "${lab[@]}" restart "$leader"
  for ((t = 0; t < 300; t++)); do [ "$(head_of "$leader")" = "$(head_of "$other")" ] && break; sleep 0.1; done
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
median=$(echo "$sorted" | sed -n "$(( (n + 1) / 2 ))p")
worst=$(echo "$sorted" | tail -1)
echo "failover after power-off over $transport: median $median ms, worst $worst ms of $n rounds; goal: <= 3000 ms"
echo "BENCH poweroff_failover_$transport $(awk "BEGIN{printf \"%.3f\", $median/1000}") - s"
echo "BENCH poweroff_failover_worst_$transport $(awk "BEGIN{printf \"%.3f\", $worst/1000}") - s"
