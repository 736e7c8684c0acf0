#!/usr/bin/env bash
# Added cost of the Stargate hooks on a push to a small repository: N pushes (default 20)
# to a repository with core.hooksPath set and N to an identical one without, interleaved,
# through the same git daemon on the leader. Prints both medians and the difference.
# Usage: contrib/bench/hook-cost.sh [N]   (stargate-hook on PATH)
set -euo pipefail
n=${1:-20}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
lab=("$root/contrib/lab/lab" --dir "$work/lab")
trap '"${lab[@]}" down >/dev/null 2>&1; rm -rf "$work"' EXIT
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=$work/gitconfig HOME=$work
printf '[user]\n\tname = Bench\n\temail = bench@example.com\n' >"$GIT_CONFIG_GLOBAL"
"${lab[@]}" up --nodes 1 --net 127.79.1 --repos "hooked plain" >/dev/null
git --git-dir="$work/lab/a/repos/plain.git" config --unset core.hooksPath
ip=$(cat "$work/lab/a/ip")
# HOOK_BENCH_URL=file pushes to the repositories by path (no daemon, no TCP).
base="git://$ip"
[ "${HOOK_BENCH_URL:-}" = file ] && base="file://$work/lab/a/repos"
for r in hooked plain; do
  git clone -q "$base/$r.git" "$work/$r" 2>/dev/null
  git -C "$work/$r" commit -q --allow-empty -m init
  git -C "$work/$r" push -q origin HEAD:refs/heads/main
done
median() { sort -n | sed -n "$(( (n + 1) / 2 ))p"; }
declare -A t
for ((i = 1; i <= n; i++)); do
  for r in hooked plain; do
    echo "$i" >"$work/$r/file"
    git -C "$work/$r" add file
    git -C "$work/$r" commit -q -m "change $i"
    start=$(date +%s%N)
    git -C "$work/$r" push -q origin HEAD:refs/heads/main
    t[$r]+="$(( ($(date +%s%N) - start) / 1000 )) "
  done
done
hooked=$(printf '%s\n' ${t[hooked]} | median)
plain=$(printf '%s\n' ${t[plain]} | median)
echo "push median over $n runs: with hooks $((hooked / 1000)).$(printf %03d $((hooked % 1000))) ms, without $((plain / 1000)).$(printf %03d $((plain % 1000))) ms"
echo "added cost of the hooks: $(( (hooked - plain) / 1000 )).$(printf %03d $(( (hooked - plain) % 1000 < 0 ? 0 : (hooked - plain) % 1000 ))) ms per push (ratio $(awk "BEGIN{printf \"%.2f\", $hooked/$plain}"))"
