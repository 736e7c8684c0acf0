#!/usr/bin/env bash
# The push log and restore on a long journal: ENTRIES entries (default 100,000) put behind
# the tip of one generation, each an update of main as the hooks write them, then N rounds
# (default 5) of `git stargate log kv.git --json`, `git stargate log --ref refs/heads/main
# --since "1 hour ago"` and `git stargate restore --to <the first of them> --dry-run` (each
# walks the whole journal), against plain `git log --format=%B refs/stargate/journal`, which
# reads the same commits. Medians.
# Usage: contrib/bench/pushlog.sh [ENTRIES] [N]   (stargate-hook on PATH)
set -euo pipefail
entries=${1:-100000} n=${2:-5}
. "$(dirname "$0")/lib.sh"
printf '[stargate "journal"]\n\tkeep = %d\n' $((entries * 2)) >"$work/extra"
lab_up 127.79.23 "$work/extra"
L=$work/lab/$leader/repos/kv.git
git clone -q "git://$(cat "$work/lab/$leader/ip")/kv.git" "$work/client" 2>/dev/null
git -C "$work/client" commit -q --allow-empty -m one
git -C "$work/client" push -q origin HEAD:refs/heads/main
fill_journal "$L" "$entries"
git -C "$L" -c core.hooksPath=/dev/null repack -adq
echo "journal: $(journal_seq "$L") entries' worth of sequence numbers on $leader"
as_leader() { GIT_CONFIG_GLOBAL=$work/lab/$leader/gitconfig "$@"; }
ms() { local s; s=$(date +%s%N); "$@" >/dev/null 2>&1 || true; echo $(( ($(date +%s%N) - s) / 1000000 )); }
declare -A t
for ((i = 0; i < n; i++)); do
  t[plain]+="$(ms git -C "$L" log --format=%B refs/stargate/journal)"$'\n'
  t[log]+="$(ms as_leader git stargate log kv.git --json)"$'\n'
  t[since]+="$(ms as_leader git stargate log kv.git --ref refs/heads/main --since '1 hour ago')"$'\n'
  t[restore]+="$(ms as_leader git stargate restore kv.git --to "$first" --dry-run)"$'\n'
done
lines=$(as_leader git stargate log kv.git --json | grep -c '"seq"')
echo "git stargate log lists $lines updates"
p=$(median <<<"${t[plain]}")
for k in log since restore; do
  m=$(median <<<"${t[$k]}")
  echo "$k: median $m ms over $n rounds (plain git log of the journal: $p ms, ratio $(awk -v a="$m" -v b="$p" 'BEGIN{printf "%.2f", a/b}'))"
  echo "BENCH pushlog_${k}_${entries} $m $p ms"
done
