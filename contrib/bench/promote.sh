#!/usr/bin/env bash
# Planned promotion under load: N promotions (default 10) back and forth between two nodes
# while a client writes through stargate:: without pause (git kv set). Prints, per
# promotion, how long writes were refused (from the old leader's "draining" to the new
# leader's "promoted" in the audit log) and what the writer saw, then the medians; checks
# that every acknowledged write is on the final leader. Then one forced promotion away
# from a frozen leader: the time from `promote --force` to the first accepted write.
# Usage: contrib/bench/promote.sh [N]   (stargate-hook, git-kv, git-stargate and
#        git-remote-stargate on PATH, e.g. after contrib/install.sh --prefix target/stargate)
set -euo pipefail
n=${1:-10}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
lab=("$root/contrib/lab/lab" --dir "$work/lab")
writer=
cleanup() { [ -n "$writer" ] && kill "$writer" 2>/dev/null; "${lab[@]}" down >/dev/null 2>&1; rm -rf "$work"; }
trap cleanup EXIT
export GIT_CONFIG_NOSYSTEM=1 HOME=$work GIT_CONFIG_GLOBAL=$work/gitconfig
printf '[stargate "promote"]\n\tcooldown = 0s\n' >"$work/extra"
LAB_EXTRA_CONFIG=$work/extra "${lab[@]}" up --nodes 2 --net 127.79.2 >/dev/null
{ printf '[user]\n\tname = Bench\n\temail = bench@example.com\n'; "${lab[@]}" client-config git; } >"$GIT_CONFIG_GLOBAL"
git clone -q stargate::a,b/kv.git "$work/c"
ms() { date +%s%3N; }
node_git() { GIT_CONFIG_GLOBAL=$work/lab/$1/gitconfig HOME=$work/lab/$1 git "${@:2}"; }

# The writer: one line per attempt, "<i> <ok|refused> <end ms>".
(
  cd "$work/c"
  for ((i = 0; ; i++)); do
    if git kv set "w$i" "$i" 2>/dev/null; then r=ok; else r=refused; fi
    echo "$i $r $(ms)"
  done
) >"$work/writes" &
writer=$!
sleep 1
for ((k = 1; k <= n; k++)); do
  leader=$("${lab[@]}" leader)
  to=$([ "$leader" = a ] && echo b || echo a)
  node_git "$to" stargate promote --yes >/dev/null
  sleep 0.7
done
sleep 1
kill "$writer"; wait "$writer" 2>/dev/null || true; writer=

audit=$work/lab/shared/stargate.lock.audit
drains=($(grep '"event":"draining"' "$audit" | sed 's/.*"time_ms":\([0-9]*\).*/\1/'))
promos=($(grep '"event":"promoted"' "$audit" | sed 's/.*"time_ms":\([0-9]*\).*/\1/'))
windows=()
for ((k = 0; k < ${#promos[@]}; k++)); do windows+=($(( promos[k] - drains[k] ))); done
refused=$(grep -c ' refused ' "$work/writes" || true)
acked=$(grep -c ' ok ' "$work/writes" || true)
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
echo "writes refused during each planned promotion (ms): ${windows[*]}"
echo "median $(median "${windows[@]}") ms, worst $(printf '%s\n' "${windows[@]}" | sort -n | tail -1) ms over ${#windows[@]} promotions"
echo "the writer: $acked acknowledged, $refused refused, $(awk '{print $3 - p; p = $3}' "$work/writes" | sort -n | tail -1) ms the longest between two attempts"

leader=$("${lab[@]}" leader)
missing=0
while read -r i r _; do
  [ "$r" = ok ] || continue
  [ "$(node_git "$leader" --git-dir="$work/lab/$leader/repos/kv.git" show "refs/kv/default:w$i" 2>/dev/null)" = "$i" ] ||
    { echo "lost: w$i" >&2; missing=$((missing + 1)); }
done <"$work/writes"
echo "acknowledged writes missing on the final leader ($leader): $missing"

# Forced: the leader frozen with its Git server, the other node promoted by force.
to=$([ "$leader" = a ] && echo b || echo a)
"${lab[@]}" kill "$leader" agent STOP
"${lab[@]}" kill "$leader" daemon STOP
start=$(ms)
node_git "$to" stargate promote --force --yes >/dev/null
git clone -q "git://$(cat "$work/lab/$to/ip")/kv.git" "$work/f"
until (cd "$work/f" && git kv set forced yes 2>/dev/null); do sleep 0.01; done
echo "promote --force to the first accepted write: $(( $(ms) - start )) ms"
"${lab[@]}" kill "$leader" daemon CONT
"${lab[@]}" kill "$leader" agent CONT
[ "$missing" = 0 ]
