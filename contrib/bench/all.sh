#!/usr/bin/env bash
# Every benchmark, several times, into docs/BENCHMARKS.md: builds in release mode, installs
# into target/stargate, runs each script of contrib/bench RUNS times (default 3; the slowest
# once), and writes a table of the medians over the runs, each against plain git measured in
# the same run where there is a plain-git equivalent, with the goals and the machine.
# Every run's output is kept in target/bench/ (RUNS=1 for a quick look). About 45 minutes
# on two cores with the default.
# `--report` writes docs/BENCHMARKS.md again from what target/bench/ holds, running nothing
# (after editing this script's text, or adding a run's log there by hand). The document's
# "What was found" section is written by hand and kept as it is.
# Usage: contrib/bench/all.sh [RUNS | --report]   (as root or not; python3, curl and git on PATH)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=$root/target/bench
if [ "${1:-}" = --report ]; then
  # shellcheck disable=SC1091
  . "$out/run-info"
else
runs=${1:-3}
bindir=$(contrib/build.sh --quiet)
contrib/install.sh --prefix target/stargate --bindir "$bindir" >/dev/null
export PATH=$root/target/stargate/bin:$PATH
rm -rf "$out"
mkdir -p "$out"
started=$(date -u +%Y-%m-%dT%H:%MZ)

# name, times to run, command
bench() {
  local name=$1 times=$2 i
  shift 2
  for ((i = 1; i <= times; i++)); do
    echo "bench: $name, run $i of $times: $*" >&2
    if ! "$@" >"$out/$name.$i.log" 2>&1; then
      echo "bench: $name run $i failed; see $out/$name.$i.log" >&2
      echo "BENCH failed_$name 1 - runs" >>"$out/$name.$i.log"
    fi
  done
}
bench hooks-path "$runs" env HOOK_BENCH_URL=file contrib/bench/hook-cost.sh 30
bench hooks-git "$runs" contrib/bench/hook-cost.sh 30
bench hooks-bulk 1 contrib/bench/hook-cost.sh --refs 500 5
bench hooks-group 1 contrib/bench/hook-cost.sh --group 15
bench sync-1k "$runs" contrib/bench/sync.sh 1000 9
bench sync-10k "$runs" contrib/bench/sync.sh 10000 9
bench sync-100k "$runs" contrib/bench/sync.sh 100000 9
bench mirror-100k "$runs" contrib/bench/mirror.sh 100000 3
bench mirror-100k-reftable "$runs" env REF_FORMAT=reftable contrib/bench/mirror.sh 100000 3
for t in ssh https; do
  bench "sync-100k-$t" "$runs" env TRANSPORT=$t contrib/bench/sync.sh 100000 9
  bench "mirror-100k-$t" "$runs" env TRANSPORT=$t contrib/bench/mirror.sh 100000 3
  bench "remote-$t" "$runs" env TRANSPORT=$t contrib/bench/remote.sh 3 40
done
if [ "$(id -u)" = 0 ]; then # network namespaces
  for t in ssh https git; do bench "poweroff-$t" 1 env TRANSPORT=$t contrib/bench/poweroff.sh 10; done
fi
bench kv "$runs" contrib/bench/kv.sh 20 10
bench failover "$runs" contrib/bench/failover.sh 10
bench etcd "$runs" contrib/bench/etcd.sh 20
bench remote "$runs" contrib/bench/remote.sh 3 40
bench quorum "$runs" contrib/bench/quorum.sh 20
bench reads 1 contrib/bench/reads.sh 20 120 4
bench pushlog 1 contrib/bench/pushlog.sh 100000 5
bench idle-1k "$runs" contrib/bench/idle.sh 1000 60
bench idle-10k 1 contrib/bench/idle.sh 10000 120
bench lag 1 contrib/bench/lag.sh 120 4
bench journal 1 contrib/bench/journal.sh 1000000 15
bench reftable-path "$runs" env HOOK_BENCH_URL=file contrib/bench/reftable.sh 20
bench reftable-git "$runs" contrib/bench/reftable.sh 20
ended=$(date -u +%Y-%m-%dT%H:%MZ)
commit=$(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')
printf 'runs=%s\nstarted=%s\nended=%s\ncommit=%q\n' "$runs" "$started" "$ended" "$commit" >"$out/run-info"
fi

machine=$(
  echo "- CPU: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(nproc) cores"
  echo "- memory: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  echo "- kernel: $(uname -sr); $(git --version); $(rustc --version 2>/dev/null || echo rustc unknown)"
  echo "- commit: $commit"
  echo "- run: $started to $ended, $runs runs each (the 10k-repository idle run, the lag runs and the journal run once)"
)
MACHINE=$machine RUNS=$runs python3 - "$out" "$root/docs/BENCHMARKS.md" <<'PY'
import glob, os, re, statistics, sys
out, doc = sys.argv[1], sys.argv[2]
vals, plains, units, logs = {}, {}, {}, {}
for path in sorted(glob.glob(os.path.join(out, "*.log"))):
    name = os.path.basename(path).rsplit(".", 2)[0]
    text = open(path, errors="replace").read()
    logs.setdefault(name, text)
    for m in re.finditer(r"^BENCH (\S+) (\S+) (\S+) (\S+)$", text, re.M):
        key, v, p, unit = m.groups()
        try:
            vals.setdefault(key, []).append(float(v))
        except ValueError:
            continue
        if p != "-":
            plains.setdefault(key, []).append(float(p))
        units[key] = unit

def med(key, table=vals):
    v = table.get(key)
    return statistics.median(v) if v else None

def fmt(x, unit=""):
    if x is None:
        return "n/a"
    return f"{x:.3f}".rstrip("0").rstrip(".") + (f" {unit}" if unit else "")

rows = [
    ("hooks_floor_path", "push by path, six hooks that are /bin/true (git's own cost of starting them)"),
    ("hooks_full_path", "push by path, a managed repository's own hooks (four processes; before: githooks, six)"),
    ("hooks_minimal_path", "push by path, Stargate's githooks-minimal (three processes)"),
    ("hooks_floor_git", "push over git://, six /bin/true hooks"),
    ("hooks_full_git", "push over git://, Stargate's hooks"),
    ("hooks_minimal_git", "push over git://, githooks-minimal"),
    ("hooks_bulk_unmanaged_plain", "500-ref push by path into a repository Stargate does not manage (plain: no Stargate)"),
    ("hooks_bulk_unmanaged_atomic", "the same, --atomic"),
    ("hooks_bulk_wide_plain", "500-ref push into it with the older machine-wide core.hooksPath (plain: no Stargate)"),
    ("hooks_bulk_wide_atomic", "the same, --atomic"),
    ("hooks_bulk_wfloor_plain", "500-ref push into it with a machine-wide directory of /bin/true hooks (plain: no Stargate)"),
    ("hooks_bulk_wfloor_atomic", "the same, --atomic"),
    ("hooks_bulk_managed_plain", "500-ref push by path into a managed repository (plain: git's floor, its four hooks as /bin/true)"),
    ("hooks_bulk_managed_atomic", "the same, --atomic"),
    ("hooks_bulk_floor_plain", "500-ref push, four /bin/true hooks (plain: no hooks)"),
    ("hooks_bulk_floor_atomic", "the same, --atomic"),
    ("hooks_group_managed", "one-ref push by path on the leader of a two-node group, managed (plain: git's floor, the same hooks as /bin/true)"),
    ("sync_idle_1000", "idle sync at 1k refs (plain: git fetch --prune '+refs/*:refs/*')"),
    ("sync_one_1000", "one-change sync at 1k refs"),
    ("sync_idle_10000", "idle sync at 10k refs"),
    ("sync_one_10000", "one-change sync at 10k refs"),
    ("sync_idle_100000", "idle sync at 100k refs"),
    ("sync_one_100000", "one-change sync at 100k refs"),
    ("mirror_100000", "initial mirror at 100k refs (plain: git clone --mirror)"),
    ("idle_cpu_1000", "replica agent CPU, 1,000 idle repositories, 30 s interval (plain: git ls-remote per repository per interval)"),
    ("idle_rss_1000", "replica agent memory, 1,000 repositories"),
    ("idle_write_1000", "a write reaching the replica, 1,000 repositories"),
    ("idle_sweep_1000", "the hourly sweep's share, 1,000 repositories (500 idle syncs' CPU, spread over the hour)"),
    ("idle_cpu_10000", "replica agent CPU, 10,000 idle repositories, 30 s interval"),
    ("idle_sweep_10000", "the hourly sweep's share, 10,000 repositories"),
    ("idle_rss_10000", "replica agent memory, 10,000 repositories"),
    ("idle_write_10000", "a write reaching the replica, 10,000 repositories"),
    ("lag_p50_4ps", "replication lag p50, 4 writes/s for 120 s"),
    ("lag_p99_4ps", "replication lag p99, 4 writes/s"),
    ("handover_kill9_file", "handover after kill -9 of the leader's agent (file lease)"),
    ("etcd_handover_kill9_p50", "handover after kill -9 of the leader's agent, etcd (3 members, TTL 2 s), p50 of a run's rounds"),
    ("etcd_handover_kill9_p99", "the same, p99"),
    ("etcd_handover_stop_p50", "handover after a clean stop of the leader's agent (lease revoked), etcd, p50 of a run's rounds"),
    ("etcd_handover_stop_p99", "the same, p99"),
    ("helper_clone", "clone of 40 MB through stargate:: (plain: the leader's git:// URL)"),
    ("helper_fetch", "fetch through stargate::"),
    ("helper_push", "push through stargate::"),
    ("helper_ls_remote", "ls-remote through stargate::"),
    ("ryw_fetch_on", "fetch from a current replica through stargate::, read-your-writes on (plain: git fetch of the replica's git:// URL)"),
    ("ryw_fetch_off", "the same with stargate.readYourWrites=false"),
    ("pushlog_log_100000", "git stargate log of a 100,000-entry journal (plain: git log --format=%B of the journal)"),
    ("pushlog_since_100000", "git stargate log --ref --since, same journal"),
    ("pushlog_restore_100000", "git stargate restore --dry-run to the oldest of them (walks the whole journal)"),
    ("cascade_lag_b_p50_4ps", "lag p50 of b, leader a -> b -> c, 4 writes/s for 120 s"),
    ("cascade_lag_b_p99_4ps", "lag p99 of b"),
    ("cascade_lag_c_p50_4ps", "lag p50 of c, end to end through b"),
    ("cascade_lag_c_p99_4ps", "lag p99 of c, end to end through b"),
    ("kv_set_1", "git kv set, one client (plain: git push of a new commit)"),
    ("kv_rate_1", "git kv set rate, one client"),
    ("kv_lag_p99_1", "replication lag p99 at that rate"),
    ("kv_rate_8", "git kv set rate, 8 concurrent clients on one namespace"),
    ("kv_latency_p50_8", "one set's latency p50, 8 clients"),
    ("kv_latency_p99_8", "one set's latency p99, 8 clients"),
    ("kv_gave_up_8", "sets that gave up, 8 clients x 10 (lost or duplicated keys fail the run)"),
    ("kv_lost_8", "keys lost, 8 clients x 10"),
    ("kv_lag_p99_all", "replication lag p99 over both kv phases"),
    ("quorum_push_async", "push over git://, three nodes, async replication (plain: no hooks)"),
    ("quorum_push_quorum", "push over git://, three nodes, quorum mode (a second node staged it)"),
    ("journal_push_1000000", "push over git:// with 1,000,000 journal entries behind the tip (plain column: the same with ~100)"),
    ("journal_sync_1000000", "the replica's one-change sync with 1,000,000 entries behind the tip (plain column: with ~100)"),
    ("files_hooks_path", "push by path to a files repository, Stargate's hooks (plain: no hooks; reftable bench)"),
    ("reftable_hooks_path", "push by path to a reftable repository, Stargate's hooks (plain: no hooks)"),
    ("files_hooks_git", "push over git:// to a files repository, Stargate's hooks (plain: no hooks; reftable bench)"),
    ("reftable_hooks_git", "push over git:// to a reftable repository, Stargate's hooks (plain: no hooks)"),
    ("mirror_100000_reftable", "initial mirror at 100k refs, reftable on both sides (plain: git clone --mirror --ref-format=reftable)"),
    ("reftable_sync", "the replica's sync of one push, reftable on both nodes (plain column: the same on files)"),
    ("mirror_100000_ssh", "initial mirror at 100k refs over ssh (plain: git clone --mirror over the same sshd)"),
    ("sync_idle_100000_ssh", "idle sync at 100k refs over ssh (plain: git fetch --prune over the same sshd)"),
    ("sync_one_100000_ssh", "one-change sync at 100k refs over ssh"),
    ("mirror_100000_https", "initial mirror at 100k refs over https with client certificates (plain: git clone --mirror, same nginx)"),
    ("sync_idle_100000_https", "idle sync at 100k refs over https (plain: git fetch --prune, same nginx)"),
    ("sync_one_100000_https", "one-change sync at 100k refs over https"),
    ("helper_clone_ssh", "clone of 40 MB through stargate:: over ssh (plain: the leader's ssh URL)"),
    ("helper_fetch_ssh", "fetch through stargate:: over ssh"),
    ("helper_push_ssh", "push through stargate:: over ssh (the leader's hooks run in both)"),
    ("helper_ls_remote_ssh", "ls-remote through stargate:: over ssh"),
    ("helper_clone_https", "clone of 40 MB through stargate:: over https (plain: the leader's https URL)"),
    ("helper_fetch_https", "fetch through stargate:: over https"),
    ("helper_push_https", "push through stargate:: over https (the leader's hooks run in both)"),
    ("helper_ls_remote_https", "ls-remote through stargate:: over https"),
    ("poweroff_failover_ssh", "failover after the leader's machine is powered off, to the first accepted write, nodes over ssh (netns lab), median of 10"),
    ("poweroff_failover_worst_ssh", "the same, worst of 10"),
    ("poweroff_failover_https", "the same, nodes over https, median of 10"),
    ("poweroff_failover_git", "the same, nodes over git://, median of 10"),
]
lines = ["| measure | median | plain git, same run | ratio | runs |", "|---|---|---|---|---|"]
for key, what in rows:
    v, p, unit = med(key), med(key, plains), units.get(key, "")
    ratio = f"{v / p:.2f}" if v is not None and p else ""
    lines.append(f"| {what} | {fmt(v, unit)} | {fmt(p, unit) if p is not None else ''} | {ratio} | {len(vals.get(key, []))} |")
failed = sorted(k[len("failed_"):] for k in vals if k.startswith("failed_"))

def added(kind, t):
    v, p = med(f"hooks_{kind}_{t}"), med(f"hooks_{kind}_{t}", plains)
    return (v - p, v / p) if v is not None and p else (None, None)

def verdict(ok):
    return "met" if ok else "missed"

full_add, full_ratio = added("full", "path")
min_add, min_ratio = added("minimal", "path")
floor_add, _ = added("floor", "path")
mirror_ratio = (med("mirror_100000") / med("mirror_100000", plains)) if med("mirror_100000") and med("mirror_100000", plains) else None
kv_ratio = (med("kv_set_1") / med("kv_set_1", plains)) if med("kv_set_1") and med("kv_set_1", plains) else None
idle10k = med("idle_cpu_10000")
sweep10k = med("idle_sweep_10000")
idle10k_all = idle10k + sweep10k if idle10k is not None and sweep10k is not None else idle10k
gave_up = med("kv_gave_up_8")
q_async, q_quorum = med("quorum_push_async"), med("quorum_push_quorum")
quorum_ratio = q_quorum / q_async if q_async and q_quorum else None
goals = [
    ("1. 10,000 idle repositories cost the replica's agent <= 2 % of a core at the default interval",
     f"{fmt(idle10k, '%')} between sweeps, {fmt(idle10k_all, '%')} with the hourly sweep spread out; {fmt(med('idle_rss_10000'), 'MB')} (1,000: {fmt(med('idle_cpu_1000'), '%')}, {fmt(med('idle_rss_1000'), 'MB')})",
     verdict(idle10k_all is not None and idle10k_all <= 2.0)),
    ("2. initial mirror at 100k refs, ratio to git clone --mirror <= 1.0",
     f"{fmt(med('mirror_100000'), 'ms')} vs {fmt(med('mirror_100000', plains), 'ms')}, ratio {fmt(mirror_ratio)}",
     verdict(mirror_ratio is not None and mirror_ratio <= 1.0)),
    ("3. hooks <= 5 ms per push above none, ratio <= 1.35, by path",
     f"full set +{fmt(full_add, 'ms')} (ratio {fmt(full_ratio)}); minimal set +{fmt(min_add, 'ms')} (ratio {fmt(min_ratio)}); six /bin/true hooks alone +{fmt(floor_add, 'ms')}",
     "full set: " + verdict(full_add is not None and full_add <= 5 and full_ratio <= 1.35)
     + "; minimal set: ms " + verdict(min_add is not None and min_add <= 5)
     + ", ratio " + verdict(min_ratio is not None and min_ratio <= 1.35)),
    ("4. git kv set <= 2x one plain push; 8 concurrent writers never give up",
     f"ratio {fmt(kv_ratio)}; gave up {fmt(gave_up)} of 80",
     verdict(kv_ratio is not None and kv_ratio <= 2.0 and gave_up == 0)),
    ("5. a push in quorum mode <= 2x the same push in async mode",
     f"{fmt(q_quorum, 'ms')} vs {fmt(q_async, 'ms')}, ratio {fmt(quorum_ratio)}",
     verdict(quorum_ratio is not None and quorum_ratio <= 2.0)),
]
kv_p50, kv_p99 = med("kv_latency_p50_8"), med("kv_latency_p99_8")
kv_rate1, kv_rate8, kv_lost = med("kv_rate_1"), med("kv_rate_8"), med("kv_lost_8")
goals.append((
    "8. 8 concurrent git kv set writers on one namespace: p99 <= 3x p50 and <= 1 s; rate >= one writer's; 0 lost, 0 given up",
    f"p50 {fmt(kv_p50, 'ms')}, p99 {fmt(kv_p99, 'ms')}; {fmt(kv_rate8)} sets/s vs {fmt(kv_rate1)}; lost {fmt(kv_lost)}, gave up {fmt(gave_up)}",
    verdict(kv_p50 is not None and kv_p99 is not None and kv_p99 <= 3 * kv_p50 and kv_p99 <= 1000
            and kv_rate1 is not None and kv_rate8 is not None and kv_rate8 >= kv_rate1
            and kv_lost == 0 and gave_up == 0)))
j_push, j_push0 = med("journal_push_1000000"), med("journal_push_1000000", plains)
j_sync, j_sync0 = med("journal_sync_1000000"), med("journal_sync_1000000", plains)
goals.append((
    "6. append and sync cost with 1M journal entries behind the tip stay what they are at 100 (ratio <= 1.2)",
    f"push {fmt(j_push, 'ms')} vs {fmt(j_push0, 'ms')}; sync {fmt(j_sync, 'ms')} vs {fmt(j_sync0, 'ms')}",
    verdict(j_push is not None and j_push0 and j_sync is not None and j_sync0
            and j_push / j_push0 <= 1.2 and j_sync / j_sync0 <= 1.2)))
e_kill, e_stop = med("etcd_handover_kill9_p99"), med("etcd_handover_stop_p99")
goals.append((
    "7. etcd handover p99 <= 2.5 s after kill -9 of the leader's agent, <= 0.5 s after a clean stop",
    f"kill -9: p99 {fmt(e_kill, 'ms')} (p50 {fmt(med('etcd_handover_kill9_p50'), 'ms')}); clean stop: p99 {fmt(e_stop, 'ms')} (p50 {fmt(med('etcd_handover_stop_p50'), 'ms')})",
    "kill -9: " + verdict(e_kill is not None and e_kill <= 2500) + "; clean stop: " + verdict(e_stop is not None and e_stop <= 500)))
def ratio(key):
    v, p = med(key), med(key, plains)
    return v / p if v is not None and p else None
t_goal = {}
for t in ("ssh", "https"):
    t_goal[t] = (ratio(f"mirror_100000_{t}"), ratio(f"sync_one_100000_{t}"))
off_ssh = med("poweroff_failover_ssh")
goals.append((
    "9. over ssh and https: initial mirror at 100k refs <= 1.0x git clone --mirror; one-change sync at 100k refs <= 0.05x git fetch; failover after a power-off <= 3 s over ssh",
    f"ssh: mirror {fmt(t_goal['ssh'][0])}x, one change {fmt(t_goal['ssh'][1])}x; https: mirror {fmt(t_goal['https'][0])}x, one change {fmt(t_goal['https'][1])}x; power-off over ssh median {fmt(off_ssh, 's')} (worst {fmt(med('poweroff_failover_worst_ssh'), 's')})",
    verdict(all(m is not None and m <= 1.0 and o is not None and o <= 0.05 for m, o in t_goal.values())
            and off_ssh is not None and (med("poweroff_failover_worst_ssh") or off_ssh) <= 3.0)))
b_un, b_un_a = med("hooks_bulk_unmanaged_plain"), med("hooks_bulk_unmanaged_atomic")
b_un0, b_un0_a = med("hooks_bulk_unmanaged_plain", plains), med("hooks_bulk_unmanaged_atomic", plains)
b_m, b_m_a = med("hooks_bulk_managed_plain"), med("hooks_bulk_managed_atomic")
b_f, b_f_a = med("hooks_bulk_managed_plain", plains), med("hooks_bulk_managed_atomic", plains)
g_m, g_f = med("hooks_group_managed"), med("hooks_group_managed", plains)
share = lambda v, p: (v / p - 1) * 100 if v is not None and p else None
goals.append((
    "10. 500-ref push into an unmanaged repository <= 1.05x no Stargate; into a managed one <= 20 % above git's floor (non-atomic and --atomic); one-ref push on a group's leader <= 3 ms above the floor",
    f"unmanaged {fmt(b_un / b_un0 if b_un and b_un0 else None)}x, --atomic {fmt(b_un_a / b_un0_a if b_un_a and b_un0_a else None)}x; "
    f"managed +{fmt(share(b_m, b_f), '%')}, --atomic +{fmt(share(b_m_a, b_f_a), '%')}; one ref +{fmt(g_m - g_f if g_m and g_f else None, 'ms')}",
    "unmanaged: " + verdict(b_un and b_un0 and b_un / b_un0 <= 1.05 and b_un_a / b_un0_a <= 1.05)
    + "; managed: " + verdict(share(b_m, b_f) is not None and share(b_m, b_f) <= 20 and share(b_m_a, b_f_a) <= 20)
    + "; one ref: " + verdict(g_m is not None and g_f is not None and g_m - g_f <= 3)))
goal_lines = ["| goal | measured | |", "|---|---|---|"] + [f"| {g} | {m} | {v} |" for g, m, v in goals]
# "What was found" is the team's own account, written by hand below the tables: carried
# over from the file as it is, never regenerated.
found = "## What was found\n\nNothing yet: this section is written by hand.\n"
if os.path.exists(doc):
    previous = open(doc).read()
    at = previous.find("\n## What was found\n")
    if at >= 0:
        found = previous[at + 1:]
body = f"""# Benchmarks

Written by `contrib/bench/all.sh` (see README.md, Benchmarks): a release build, every script of
`contrib/bench/` run {os.environ['RUNS']} times (the 10,000-repository idle run, the lag run and the journal run once), the
median over the runs, and plain git measured by the same script in the same run where plain git
has an equivalent. The machine is shared and noisy: compare the ratios, not the milliseconds
with another machine's. Every run's full output is in `target/bench/` after a run.

## Machine

{os.environ['MACHINE']}

## Goals

{chr(10).join(goal_lines)}
{"" if not failed else chr(10) + "Runs that failed (see target/bench/): " + ", ".join(failed) + chr(10)}
## Every measure

{chr(10).join(lines)}

{found}"""
open(doc, "w").write(body)
print(f"wrote {doc}")
PY
