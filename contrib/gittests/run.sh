#!/usr/bin/env bash
# git's own test scripts against the installed git, with and without Stargate: the hook
# tests of git v2.47.3, once for each mode, and a table of what passed.
#   unmanaged  Stargate installed as the README says (its programs on PATH, nothing set for
#              the machine): git runs none of Stargate's hooks in a repository it does not
#              manage, so this is git's own result, the reference for the others
#   wide       the older machine-wide core.hooksPath naming Stargate's hooks (a system
#              config), the test repositories outside any stargate.root: not managed
#   managed    the same with the trash directories under a running node's stargate.root:
#              every bare test repository is managed by the hooks' rule (its node state
#              above it), and the agent gives those it finds two levels down their own
#              hooks (git stargate manage); a repository with a work tree is never managed
# Usage: contrib/gittests/run.sh [--git-src DIR] [--modes "unmanaged wide managed"] [t5516 ...]
#   --git-src DIR   a git v2.47.3 source tree (default: target/gittests/git-2.47.3, cloned
#                   from https://github.com/git/git when missing and the network allows)
# Needs stargate-hook, git-stargate and git-remote-stargate on PATH (contrib/install.sh),
# make, a C compiler and zlib's headers: only t/helper/test-tool and the templates are
# built. Results in target/gittests/<mode>/<test>.out (TAP) and .log (the verbose
# log); exits 1 when a mode's failures differ from unmanaged's.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$root/target/gittests
src=$out/git-2.47.3
modes="unmanaged wide managed"
tests=()
while [ $# -gt 0 ]; do
  case $1 in
  --git-src) src=$(cd "$2" && pwd); shift 2 ;;
  --modes) modes=$2; shift 2 ;;
  -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
  *) tests+=("$1"); shift ;;
  esac
done
[ ${#tests[@]} -gt 0 ] || tests=(t1416 t1800 t5401 t5406 t5407 t5411 t5516 t5543 t5571 t7503 t7504 t7505)
die() { echo "gittests: $*" >&2; exit 1; }
for p in git stargate-hook git-stargate make cc; do command -v "$p" >/dev/null || die "$p is not on PATH"; done
git version | grep -q '^git version 2\.47\.' || echo "gittests: the installed git is $(git version), the scripts are v2.47.3's" >&2

# git's source: only the test helper and the templates are built; the tests run the
# installed git (GIT_TEST_INSTALLED).
if [ ! -f "$src/t/test-lib.sh" ]; then
  mkdir -p "$out"
  git clone -q --depth 1 --branch v2.47.3 https://github.com/git/git "$src" ||
    die "no git source at $src and cannot clone it: give --git-src DIR (git v2.47.3)"
fi
build=(NO_GETTEXT=1 NO_TCLTK=1 NO_CURL=1 NO_EXPAT=1 NO_OPENSSL=1 NO_PYTHON=1)
if [ ! -x "$src/t/helper/test-tool" ] || [ ! -d "$src/templates/blt" ]; then
  mkdir -p "$out"
  { make -C "$src" -j"$(nproc)" "${build[@]}" GIT-BUILD-OPTIONS t/helper/test-tool &&
    make -C "$src/templates" SHELL_PATH=/bin/sh PERL_PATH="$(command -v perl)"; } >"$out/build.log" 2>&1 ||
    die "building git's test-tool failed: $out/build.log"
fi
installed=$(dirname "$(command -v git)")

# The node for the managed mode: one agent leading on a loopback lab.
lab=("$root/contrib/lab/lab" --dir "$out/lab")
cleanup() { "${lab[@]}" down >/dev/null 2>&1 || true; }
trap cleanup EXIT

# A git for the tests that reads `system` as its system config (test-lib sets
# GIT_CONFIG_NOSYSTEM and unsets every other GIT_ variable it does not know).
wrapper() { # dir system-config
  mkdir -p "$1"
  cat >"$1/git" <<WRAP
#!/bin/sh
unset GIT_CONFIG_NOSYSTEM
GIT_CONFIG_SYSTEM='$2'
export GIT_CONFIG_SYSTEM
exec '$installed/git' "\$@"
WRAP
  chmod +x "$1/git"
}

run_mode() { # mode
  local mode=$1 dir=$out/$1 bin=$installed extra=() t
  rm -rf "$dir"
  mkdir -p "$dir"
  case $mode in
  wide | managed)
    mkdir -p "$dir/githooks"
    for h in "$root"/githooks/*; do ln -s "$(command -v stargate-hook)" "$dir/githooks/$(basename "$h")"; done
    printf '[core]\n\thooksPath = %s\n[receive]\n\tprocReceiveRefs = refs/for/kv/\n' "$dir/githooks" >"$dir/system.config"
    if [ "$mode" = managed ]; then
      "${lab[@]}" up --nodes 1 --net 127.79.7 --repos "" >/dev/null
      cat "$out/lab/a/gitconfig" >>"$dir/system.config"
      extra=(--root="$out/lab/a/repos")
    fi
    wrapper "$dir/bin" "$dir/system.config"
    bin=$dir/bin
    ;;
  esac
  for t in "${tests[@]}"; do
    local script
    script=$(cd "$src/t" && ls "$t"-*.sh 2>/dev/null | head -1) || true
    [ -n "$script" ] || { echo "$t: no such script" >"$dir/$t.out"; continue; }
    (cd "$src/t" && GIT_TEST_INSTALLED=$bin GIT_TEST_DEFAULT_HASH=sha1 timeout 1800 \
      sh "$script" --verbose-log -x "${extra[@]}" >"$dir/$t.out" 2>&1) || true
    cp "$src/t/test-results/${script%.sh}.out" "$dir/$t.log" 2>/dev/null || true
  done
  [ "$mode" != managed ] || cleanup
}

# passed/failed/skipped of one script's output, as test-lib prints them.
count() { # file
  local ok fail skip
  ok=$(grep -c '^ok [0-9]' "$1" || true)
  fail=$(grep '^not ok [0-9]' "$1" | grep -vc '# TODO' || true)
  skip=$(grep -c '^ok [0-9].*# skip' "$1" || true)
  echo "$ok/$fail/$skip"
}

for mode in $modes; do (run_mode "$mode"); done
status=0
printf '%-8s' test; for mode in $modes; do printf ' %-20s' "$mode ok/fail/skip"; done; echo
for t in "${tests[@]}"; do
  printf '%-8s' "$t"
  for mode in $modes; do printf ' %-20s' "$(count "$out/$mode/$t.out")"; done
  echo
  for mode in $modes; do
    [ "$mode" != unmanaged ] || continue
    diff <(grep '^not ok' "$out/unmanaged/$t.out" | sed 's/ - .*//') <(grep '^not ok' "$out/$mode/$t.out" | sed 's/ - .*//') >/dev/null ||
      { echo "  $mode differs: $(grep '^not ok' "$out/$mode/$t.out" | tr '\n' ';')"; status=1; }
  done
done
exit $status
