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
seq_of() { git -C "$1" log -1 --format=%s refs/stargate/journal | awk '{print $3}'; }
tip=$(git -C "$L" rev-parse refs/stargate/journal)
head=$(git -C "$L" rev-parse refs/heads/main)
msg=$(git -C "$L" log -1 --format=%B "$tip")
first=$(($(seq_of "$L") + 1))
depth=$(echo "$msg" | awk '$1 == "depth" {print $2}')
epoch=$(echo "$msg" | awk '$1 == "epoch" {print $2}')
node=$(echo "$msg" | awk '$1 == "node" {print $2}')
awk -v n="$entries" -v first="$first" -v depth="$depth" -v epoch="$epoch" -v node="$node" \
  -v head="$head" -v tip="$tip" -v now="$(date +%s)" 'BEGIN {
  for (i = 0; i < n; i++) {
    seq = first + i
    m = sprintf("stargate journal %d\n\nepoch %d\nnode %s\ntime %d000\ndepth %d\n%d %s %s refs/heads/main\n", seq, epoch, node, now, depth + 1 + i, seq, head, head)
    printf "commit refs/stargate/bench\nmark :%d\ncommitter stargate <stargate@%s> %d +0000\ndata %d\n%s", i + 1, node, now, length(m), m
    if (i == 0) printf "from %s\n", tip; else printf "from :%d\n", i
    printf "deleteall\n\n"
  }
}' | git -C "$L" fast-import --quiet
new=$(git -C "$L" rev-parse refs/stargate/bench)
git -C "$L" -c core.hooksPath=/dev/null update-ref refs/stargate/journal "$new" "$tip"
git -C "$L" -c core.hooksPath=/dev/null update-ref -d refs/stargate/bench
git -C "$L" -c core.hooksPath=/dev/null repack -adq
echo "journal: $(seq_of "$L") entries' worth of sequence numbers on $leader"
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
