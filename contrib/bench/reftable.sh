#!/usr/bin/env bash
# What reftable ref storage costs against the files backend, same lab, same run: Stargate
# reads and writes reftable refs through git's plumbing (one process per read or
# transaction) where it handles files in-process. Four repositories on the leader, N
# pushes each (default 20), interleaved, through the same git daemon:
#   plain-files, plain-table   no hooks (core.hooksPath unset): git's own push
#   files, table               Stargate's hooks (journaled)
# and after each round, on the replica (agent off), one `git stargate sync` of `files` and
# of `table` (both reftable there too for `table`). Prints medians, differences and ratios.
# Usage: contrib/bench/reftable.sh [N]   (stargate-hook on PATH; HOOK_BENCH_URL=file: by path)
set -euo pipefail
n=${1:-20}
. "$(dirname "$0")/lib.sh"
kinds="plain-files plain-table files table"
"${lab[@]}" up --nodes 2 --net 127.79.7 --repos "$kinds" >/dev/null
leader=$("${lab[@]}" leader)
replica=$([ "$leader" = a ] && echo b || echo a)
"${lab[@]}" kill "$replica" agent TERM
sleep 1
for node in "$leader" "$replica"; do
  for r in plain-table table; do
    git --git-dir="$work/lab/$node/repos/$r.git" -c core.hooksPath=/dev/null refs migrate --ref-format=reftable
  done
  for r in plain-files plain-table; do git --git-dir="$work/lab/$node/repos/$r.git" config --unset core.hooksPath; done
done
ip=$(cat "$work/lab/$leader/ip")
# HOOK_BENCH_URL=file pushes to the repositories by path (no daemon, no TCP).
base="git://$ip" how="git://" t=git
[ "${HOOK_BENCH_URL:-}" = file ] && base="file://$work/lab/$leader/repos" how="by path" t=path
for r in $kinds; do
  git clone -q "$base/$r.git" "$work/$r" 2>/dev/null
  git -C "$work/$r" commit -q --allow-empty -m init
  git -C "$work/$r" push -q origin HEAD:refs/heads/main
done
as_replica() { GIT_CONFIG_GLOBAL=$work/lab/$replica/gitconfig "$@"; }
for r in files table; do as_replica git stargate sync "$r.git" >/dev/null; done
us() { local s; s=$(date +%s%N); "$@" >/dev/null; echo $(( ($(date +%s%N) - s) / 1000 )); }
declare -A t
for ((i = 1; i <= n; i++)); do
  for r in $kinds; do t[$r]+="$(push_change "$work/$r" "$i") "; done
  for r in files table; do t[sync-$r]+="$(us as_replica git stargate sync "$r.git") "; done
done
for r in files table; do
  L=$work/lab/$leader/repos/$r.git R=$work/lab/$replica/repos/$r.git
  [ "$(git --git-dir="$L" rev-list --count refs/stargate/journal)" -gt "$n" ] || { echo "bench: $r was not journaled" >&2; exit 1; }
  [ "$(git --git-dir="$R" rev-parse refs/heads/main)" = "$(git --git-dir="$L" rev-parse refs/heads/main)" ] || { echo "bench: $r did not replicate" >&2; exit 1; }
done
[ "$(git --git-dir="$work/lab/$replica/repos/table.git" rev-parse --show-ref-format)" = reftable ] || { echo "bench: the replica's table is not reftable" >&2; exit 1; }
declare -A m
for k in $kinds sync-files sync-table; do m[$k]=$(printf '%s\n' ${t[$k]} | median); done
ratio() { awk "BEGIN{printf \"%.2f\", $1/$2}"; }
echo "push medians over $n runs ($how):"
for r in $kinds; do echo "  $r: $(fmt "${m[$r]}")"; done
echo "  hooks on files:    +$(fmt $(( m[files] - m[plain-files] ))) (ratio $(ratio "${m[files]}" "${m[plain-files]}"))"
echo "  hooks on reftable: +$(fmt $(( m[table] - m[plain-table] ))) (ratio $(ratio "${m[table]}" "${m[plain-table]}"))"
echo "sync of one push (git stargate sync, replica): files $(fmt "${m[sync-files]}"), reftable $(fmt "${m[sync-table]}") (ratio $(ratio "${m[sync-table]}" "${m[sync-files]}"))"
echo "BENCH reftable_hooks_$t $(awk "BEGIN{printf \"%.3f\", ${m[table]}/1000}") $(awk "BEGIN{printf \"%.3f\", ${m[plain-table]}/1000}") ms"
echo "BENCH files_hooks_$t $(awk "BEGIN{printf \"%.3f\", ${m[files]}/1000}") $(awk "BEGIN{printf \"%.3f\", ${m[plain-files]}/1000}") ms"
if [ "$t" = git ]; then
  echo "BENCH reftable_sync $(awk "BEGIN{printf \"%.3f\", ${m[sync-table]}/1000}") $(awk "BEGIN{printf \"%.3f\", ${m[sync-files]}/1000}") ms"
fi
