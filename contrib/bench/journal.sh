#!/usr/bin/env bash
# Journal cost with many entries behind the tip: a push's cost (the hooks append one entry)
# and the replica's sync of it (`git stargate sync`, one change), N rounds each (default 15),
# first with the ~100 entries a new journal has, then after ENTRIES more (default 1,000,000)
# were put behind the tip, in one generation (stargate.journal.keep above ENTRIES, so no
# checkpoint bounds them). Medians, the long journal's against the short one's.
# Usage: contrib/bench/journal.sh [ENTRIES] [N]   (stargate-hook on PATH)
set -euo pipefail
entries=${1:-1000000} n=${2:-15}
. "$(dirname "$0")/lib.sh"
printf '[stargate "journal"]\n\tkeep = %d\n[stargate "sync"]\n\ttimeout = 10m\n' $((entries * 2)) >"$work/extra"
lab_up 127.79.14 "$work/extra"
replica_agent_off
git clone -q "$url" "$work/client" 2>/dev/null

us() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000 )); }
ms() { awk "BEGIN{printf \"%.2f\", $1/1000}"; }
push() { git -C "$work/client" commit -q --allow-empty -m "$1"; git -C "$work/client" push -q origin HEAD:refs/heads/main; }
replica_sync() { as_replica git stargate sync kv.git; }
declare -A t
rounds() { # label
  local i
  for ((i = 1; i <= n; i++)); do
    git -C "$work/client" commit -q --allow-empty -m "$1 $i"
    t[push_$1]+="$(us git -C "$work/client" push -q origin HEAD:refs/heads/main) "
    t[sync_$1]+="$(us replica_sync) "
  done
  [ "$(git -C "$R" rev-parse refs/heads/main)" = "$(git -C "$L" rev-parse refs/heads/main)" ] ||
    { echo "bench: the replica did not converge" >&2; exit 1; }
}
for i in $(seq 100); do push "fill $i"; done
replica_sync
echo "short journal: seq $(journal_seq "$L")"
rounds short

started=$(date +%s%N)
fill_journal "$L" "$entries"
echo "wrote $entries entries in $(( ($(date +%s%N) - started) / 1000000 )) ms"
# The replica is now further behind than it walks: one full mirror, not measured.
mirrored=$(us replica_sync)
echo "the replica's full mirror of the long journal: $(ms "$mirrored") ms"
[ "$(journal_seq "$R")" = "$(journal_seq "$L")" ] || { echo "bench: the replica did not mirror the journal" >&2; exit 1; }
echo "long journal: seq $(journal_seq "$L")"
rounds long

for k in push sync; do
  s=$(printf '%s\n' ${t[${k}_short]} | median) l=$(printf '%s\n' ${t[${k}_long]} | median)
  echo "$k: $(ms "$l") ms with $entries entries behind the tip, $(ms "$s") ms with ~100 (ratio $(awk "BEGIN{printf \"%.2f\", $l/$s}"))"
  echo "BENCH journal_${k}_$entries $(ms "$l") $(ms "$s") ms"
done
