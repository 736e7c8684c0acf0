# shellcheck shell=bash
# Sourced by hook-cost.sh --refs: a push of many refs at once into repositories Stargate
# does and does not manage, and git's floor for each (see hook-cost.sh's header).
kinds="none unmanaged wide wfloor managed floor"
# HOOK_BULK_ONLY="none unmanaged": measure only those (more rounds in the same time).
measured=${HOOK_BULK_ONLY:-$kinds}
"${lab[@]}" up --nodes 1 --net 127.79.2 --repos "managed floor" >/dev/null
repos=$work/lab/a/repos
node=$work/lab/a/gitconfig
git init -q --bare "$work/none.git"
for r in unmanaged wide wfloor; do git init -q --bare "$work/$r.git"; done
# The older machine-wide setting: the node's config and Stargate's hooks for every repository
# (contrib/install.sh's githooks, as the lab lays them out), or as many /bin/true links.
mkdir "$work/hooks-wfloor"
for h in "$root"/githooks/*; do ln -s /bin/true "$work/hooks-wfloor/$(basename "$h")"; done
{ cat "$node"; printf '[core]\n\thooksPath = %s\n' "$work/lab/githooks"; } >"$work/wide.gitconfig"
{ cat "$node"; printf '[core]\n\thooksPath = %s\n' "$work/hooks-wfloor"; } >"$work/wfloor.gitconfig"
# The managed repository starts Stargate's hooks; floor starts /bin/true for the same names.
floor_of_managed "$repos/floor.git"
target() { case $1 in managed | floor) echo "$repos/$1.git" ;; *) echo "$work/$1.git" ;; esac; }
config() {
  case $1 in
  none) echo "$work/gitconfig" ;;
  wide | wfloor) echo "$work/$1.gitconfig" ;;
  *) echo "$node" ;;
  esac
}
# The client: R branches, all moved to a new commit before each round.
git init -q -b main "$work/client"
tree=$(git -C "$work/client" write-tree)
tip=$(git -C "$work/client" commit-tree -m base "$tree")
move_all() { # commit -> every branch
  awk -v c="$1" -v r="$refs" 'BEGIN { for (i = 1; i <= r; i++) printf "update refs/heads/b%04d %s\n", i, c }' |
    git -C "$work/client" update-ref --stdin
}
push() { # kind, extra push arguments -> microseconds
  local start
  start=$(date +%s%N)
  GIT_CONFIG_GLOBAL=$(config "$1") git -C "$work/client" push -q "${@:2}" "file://$(target "$1")" '+refs/heads/*:refs/heads/*' 2>/dev/null
  echo $(( ($(date +%s%N) - start) / 1000 ))
}
move_all "$tip"
for k in $kinds; do push "$k" >/dev/null; done
declare -A t
for ((i = 1; i <= n; i++)); do
  for mode in plain atomic; do
    tip=$(git -C "$work/client" commit-tree -p "$tip" -m "round $i $mode" "$tree")
    move_all "$tip"
    args=()
    [ $mode = atomic ] && args=(--atomic)
    # Each kind first in turn, after the client's refs reached the disk: the first push
    # after writing 500 loose refs paid for their writeback.
    set -- $measured
    order=$(echo $measured $measured | cut -d' ' -f$(( (i - 1) % $# + 1 ))-$(( (i - 1) % $# + $# )))
    for k in $order; do
      sync
      t[$k.$mode]+="$(push "$k" "${args[@]}") "
    done
  done
done
for k in $measured; do
  [ "$(git --git-dir="$(target "$k")" rev-parse refs/heads/b0001)" = "$tip" ] || { echo "bench: $k did not take the push" >&2; exit 1; }
done
# Each push into the managed repository journaled (a prepare and an outcome per push), its
# last outcome naming every ref.
entries=$(git --git-dir="$repos/managed.git" rev-list --count refs/stargate/journal)
named=$(git --git-dir="$repos/managed.git" log -1 --format=%B refs/stargate/journal | grep -c ' refs/heads/b')
case " $measured " in *" managed "*)
  [ "$entries" -ge $(( n * 4 )) ] && [ "$named" -eq "$refs" ] ||
    { echo "bench: the managed repository journaled $entries entries, the last naming $named refs" >&2; exit 1; } ;;
esac
[ -z "$(git --git-dir="$work/unmanaged.git" for-each-ref refs/stargate/)" ] || { echo "bench: the unmanaged repository was journaled" >&2; exit 1; }
declare -A m
ratio() { awk "BEGIN{printf \"%.2f\", $1/$2}"; }
ms() { awk "BEGIN{printf \"%.3f\", $1/1000}"; }
has() { case " $measured " in *" $1 "*) return 0 ;; esac; return 1; }
for mode in plain atomic; do
  for k in $measured; do m[$k]=$(printf '%s\n' ${t[$k.$mode]} | median); done
  label=$([ $mode = atomic ] && echo "--atomic" || echo "non-atomic")
  echo "$refs-ref push by path, $label, medians over $n runs:"
  for k in $measured; do echo "  $k: $(fmt "${m[$k]}")"; done
  if has none; then
    for k in unmanaged wide wfloor floor; do
      has $k || continue
      echo "  $k / none: $(ratio "${m[$k]}" "${m[none]}")"
      echo "BENCH hooks_bulk_${k}_$mode $(ms "${m[$k]}") $(ms "${m[none]}") ms"
    done
  fi
  if has managed && has floor; then
    echo "  managed / floor: $(ratio "${m[managed]}" "${m[floor]}"); Stargate's share above the floor: $(awk "BEGIN{printf \"%.0f\", (${m[managed]} - ${m[floor]}) * 100 / ${m[floor]}}") %"
    echo "BENCH hooks_bulk_managed_$mode $(ms "${m[managed]}") $(ms "${m[floor]}") ms"
  fi
done
