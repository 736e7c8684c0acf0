#!/usr/bin/env bash
# What quorum mode costs a push: two 3-node labs, one async and one with
# stargate.replication.mode = quorum, and a plain repository without hooks, pushed to N
# times each (default 20), interleaved, over git://. Prints the three medians and the
# ratios against plain git.
# Usage: contrib/bench/quorum.sh [N]   (stargate-hook on PATH)
set -euo pipefail
n=${1:-20}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
lab() { "$root/contrib/lab/lab" --dir "$work/$1" "${@:2}"; }
trap 'lab async down >/dev/null 2>&1; lab quorum down >/dev/null 2>&1; rm -rf "$work"' EXIT
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=$work/gitconfig HOME=$work
printf '[user]\n\tname = Bench\n\temail = bench@example.com\n' >"$GIT_CONFIG_GLOBAL"
printf '[stargate "replication"]\n\tmode = quorum\n' >"$work/quorum.gitconfig"
"$root/contrib/lab/lab" up --dir "$work/async" --nodes 3 --net 127.79.12 --repos "r plain" >/dev/null
LAB_EXTRA_CONFIG=$work/quorum.gitconfig "$root/contrib/lab/lab" up --dir "$work/quorum" --nodes 3 --net 127.79.13 --repos r >/dev/null
git --git-dir="$work/async/a/repos/plain.git" config --unset core.hooksPath
declare -A url=([async]="git://127.79.12.1/r.git" [quorum]="git://127.79.13.1/r.git" [plain]="git://127.79.12.1/plain.git")
for k in async quorum plain; do
  git clone -q "${url[$k]}" "$work/$k-clone" 2>/dev/null
  git -C "$work/$k-clone" commit -q --allow-empty -m init
  git -C "$work/$k-clone" push -q origin HEAD:refs/heads/main
done
median() { sort -n | sed -n "$(( (n + 1) / 2 ))p"; }
declare -A t
for ((i = 1; i <= n; i++)); do
  for k in async quorum plain; do
    echo "$i" >"$work/$k-clone/file"
    git -C "$work/$k-clone" add file
    git -C "$work/$k-clone" commit -q -m "change $i"
    start=$(date +%s%N)
    git -C "$work/$k-clone" push -q origin HEAD:refs/heads/main
    t[$k]+="$(( ($(date +%s%N) - start) / 1000 )) "
  done
done
ms() { awk "BEGIN{printf \"%.2f\", $1/1000}"; }
plain=$(printf '%s\n' ${t[plain]} | median)
for k in plain async quorum; do
  m=$(printf '%s\n' ${t[$k]} | median)
  echo "$k: push median $(ms "$m") ms over $n runs (ratio to plain git $(awk "BEGIN{printf \"%.2f\", $m/$plain}"))"
  [ "$k" = plain ] || echo "BENCH quorum_push_$k $(ms "$m") $(ms "$plain") ms"
done
# Every acknowledged quorum write is on a second node.
tip=$(git --git-dir="$work/quorum/a/repos/r.git" rev-parse refs/heads/main)
held=0
for node in b c; do git --git-dir="$work/quorum/$node/repos/r.git" cat-file -e "$tip" 2>/dev/null && held=$((held + 1)); done
echo "quorum: the last write is on the leader and $held of 2 peers"
