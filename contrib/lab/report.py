"""The long suite's report (contrib/lab/long-suite): README.md and SVG plots in DIR, from
DIR/data/<test>.json (what each acceptance test measured) and DIR/data/<test>.<series>.csv."""

import csv
import datetime as dt
import json
import pathlib
import subprocess
import sys

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402

matplotlib.rcParams["svg.hashsalt"] = "stargate"  # stable ids: reproducible files

# Every acceptance test, in the order of the plans; a test that failed leaves no JSON.
TESTS = [
    ("us_g10_failover", "acceptance::failover::us_g10_failover_moves_the_floating_address_and_a_push_through_it_succeeds"),
    ("us_g10_passive_rejection", "acceptance::failover::us_g10_passive_rejects_git_kv_with_exit_9_and_changes_no_ref"),
    ("us_g10_forced_promotion_and_failback", "acceptance::failover::us_g10_forced_promotion_away_from_a_cut_off_leader_then_failback"),
    ("sync_bulk_writes", "acceptance::sync::sync_bulk_100_sets_reach_the_passive_within_30_s"),
    ("disc_012_failover_consistency", "acceptance::consistency::disc_012_failover_consistency_through_promotion_and_failback"),
    ("sync_network_disruption", "acceptance::sync::sync_network_disruption_resumes_within_the_slo_without_duplicates_and_logs_it"),
    ("sync_leader_failure_mid_fetch", "acceptance::sync::sync_leader_failure_mid_fetch_of_a_large_repository"),
    ("sync_concurrency", "acceptance::sync::sync_concurrent_loops_run_one_fetch_and_skip_the_rest"),
    ("sync_load", "acceptance::sync::sync_load_many_refs_within_the_configured_timeout"),
    ("lag_slo", "acceptance::slo::lag_slo_steady_state_then_a_partition_fires_the_alert_after_two_breaching_windows"),
    # The failover and disruption plans again, every node's URL on ssh (long-suite's second pass;
    # us_g10_failover_ssh also in the first, by its own test).
    ("us_g10_failover_ssh", "acceptance::failover::us_g10_failover_over_ssh_moves_the_floating_address_and_a_push_through_it_succeeds"),
    ("us_g10_passive_rejection_ssh", "acceptance::failover::us_g10_passive_rejects_git_kv_with_exit_9_and_changes_no_ref (ssh)"),
    ("us_g10_forced_promotion_and_failback_ssh", "acceptance::failover::us_g10_forced_promotion_away_from_a_cut_off_leader_then_failback (ssh)"),
    ("disc_012_failover_consistency_ssh", "acceptance::consistency::disc_012_failover_consistency_through_promotion_and_failback (ssh)"),
    ("sync_network_disruption_ssh", "acceptance::sync::sync_network_disruption_resumes_within_the_slo_without_duplicates_and_logs_it (ssh)"),
    ("sync_leader_failure_mid_fetch_ssh", "acceptance::sync::sync_leader_failure_mid_fetch_of_a_large_repository (ssh)"),
]


def utc(ms):
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%H:%M:%S")


def rows(path):
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def fmt(v):
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".")
    if isinstance(v, (dict, list)):
        return "`" + json.dumps(v, separators=(", ", ": ")) + "`"
    return str(v)


def lag_plot(out, data, slo):
    lag = rows(data / "lag_slo.lag.csv")
    windows = rows(data / "lag_slo.windows.csv")
    if not lag:
        return None
    ev = slo["measured"]["events_ms"]
    t0 = ev["start"]
    m = lambda ms: (int(ms) - t0) / 60000  # noqa: E731
    fig, ax = plt.subplots(figsize=(11, 4.8))
    ax.plot([m(r["time_ms"]) for r in lag], [float(r["lag_s"]) for r in lag], lw=0.8, color="tab:blue",
            label="lag a client sees (age of the oldest write the replica lacks)")
    for key, style, label in (("p50_s", "tab:green", "window p50 (agent)"), ("p99_s", "tab:orange", "window p99 (agent)")):
        xs, ys = [], []
        for w in windows:
            if w[key] in ("", "null") or int(w["end_ms"]) < t0:
                continue
            xs += [m(w["start_ms"]), m(w["end_ms"])]
            ys += [float(w[key])] * 2
        ax.plot(xs, ys, color=style, lw=1.6, label=label)
    limits = slo["measured"]["limits_s"]
    ax.axhline(limits["p50"], color="tab:green", ls="--", lw=0.8, label=f"p50 limit {limits['p50']:g} s")
    ax.axhline(limits["p99"], color="tab:orange", ls="--", lw=0.8, label=f"p99 limit {limits['p99']:g} s")
    ax.axvspan(m(ev["cut"]), m(ev["heal"]), color="tab:red", alpha=0.12, label="replica cut off the leader")
    for w in windows:
        if w["breached"] == "true":
            ax.axvspan(m(w["start_ms"]), m(w["end_ms"]), ymin=0.97, ymax=1, color="tab:red")
    ax.axvline(m(ev["trigger"]), color="tab:red", lw=1, label="alert triggered")
    ax.axvline(m(ev["resolve"]), color="tab:purple", lw=1, label="alert resolved")
    ax.set_xlabel("minutes since the writer started")
    ax.set_ylabel("lag (s)")
    ax.set_title("Replication lag over time: 30-minute steady state, then a 5-minute partition")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "lag.svg")
    plt.close(fig)
    return "lag.svg"


def disruption_plot(out, data, rep):
    lag = rows(data / "sync_network_disruption.lag.csv")
    if not lag:
        return None
    t0 = int(lag[0]["time_ms"])
    m = lambda ms: (int(ms) - t0) / 60000  # noqa: E731
    fig, ax = plt.subplots(figsize=(11, 3.6))
    ax.plot([m(r["time_ms"]) for r in lag], [float(r["lag_s"]) for r in lag], lw=0.8)
    for i, d in enumerate(rep["measured"]["disruptions"]):
        ax.axvspan(m(d["cut_ms"]), m(d["heal_ms"]), color="tab:red", alpha=0.15,
                   label="traffic dropped" if i == 0 else None)
        ax.annotate(f"{d['cut_s']} s cut", (m(d["cut_ms"]), 0), xytext=(2, 4), textcoords="offset points", fontsize=7)
    ax.axhline(15, color="tab:green", ls="--", lw=0.8, label="p50 limit 15 s")
    ax.set_xlabel("minutes since the writer started")
    ax.set_ylabel("lag (s)")
    ax.set_title("Lag through network disruptions (nft drop between leader and replica)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "disruption.svg")
    plt.close(fig)
    return "disruption.svg"


def failover_plot(out, results):
    bars = []
    g = lambda t, k: results.get(t, {}).get("measured", {}).get(k)  # noqa: E731
    events = (
        ("power-off: passive takes the lease", "us_g10_failover", "lease_taken_after_s"),
        ("power-off: floating address moved", "us_g10_failover", "address_moved_after_s"),
        ("power-off: first push through the address", "us_g10_failover", "push_through_address_after_s"),
        ("forced promotion (leader cut off) to first write", "us_g10_forced_promotion_and_failback", "forced_promotion_to_first_write_s"),
        ("failback (planned)", "us_g10_forced_promotion_and_failback", "failback_s"),
        ("planned promotion command", "disc_012_failover_consistency", "promote_command_s"),
        ("failback command", "disc_012_failover_consistency", "failback_command_s"),
        ("leader powered off mid-fetch: new leader", "sync_leader_failure_mid_fetch", "powered_off_mid_fetch_new_leader_after_s"),
    )
    # The same events with the replicas over ssh (the second pass), beside them.
    events = [e for label, t, k in events for e in ((label, t, k), (f"{label} (ssh)", f"{t}_ssh", k))]
    for label, t, k in events:
        v = g(t, k)
        if v is not None:
            bars.append((label, float(v)))
    refused = g("disc_012_failover_consistency", "writes_refused_window_ms") or []
    for i, ms in enumerate(refused):
        bars.append((f"writes refused during handover {i + 1} (audit)", ms / 1000))
    if not bars:
        return None
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(bars) + 1.2))
    labels, values = zip(*reversed(bars))
    ax.barh(labels, values, color="tab:blue")
    for y, v in enumerate(values):
        ax.annotate(f"{v:.2f} s", (v, y), xytext=(3, -3), textcoords="offset points", fontsize=8)
    ax.set_xlabel("seconds")
    ax.set_title("Failover events: time from the event to the outcome")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "failover.svg")
    plt.close(fig)
    return "failover.svg"


OUTCOME_COLOURS = {("set", "ok"): "tab:green", ("get", "ok"): "tab:blue", ("set", "fail"): "tab:gray",
                   ("get", "fail"): "tab:gray", ("set", "unknown"): "tab:orange", ("get", "unknown"): "tab:orange"}


def timeline_plot(out, data, name, rep):
    """The consistency suite's timeline: every operation per client (a bar from invocation to
    return, an unknown one drawn to the end of the run), coloured by outcome; faults shaded."""
    ops = rows(data / f"{name}.ops.csv")
    if not ops:
        return None
    faults = rows(data / f"{name}.nemesis.csv")
    t0 = min(int(r["invoke_ms"]) for r in ops)
    end = max(int(r["return_ms"] or r["invoke_ms"]) for r in ops)
    s = lambda ms: (int(ms) - t0) / 1000  # noqa: E731
    fig, ax = plt.subplots(figsize=(12, 3.6))
    for f in faults:
        ax.axvspan(s(f["start_ms"]), s(f["end_ms"]), color="tab:red", alpha=0.12)
        ax.annotate(f["what"] + " " + f["node"], (s(f["start_ms"]), 1.0), xycoords=("data", "axes fraction"),
                    xytext=(2, -2), textcoords="offset points", fontsize=6, va="top")
    for (op, outcome), colour in OUTCOME_COLOURS.items():
        xs, ys = [], []
        for r in ops:
            if r["op"] != op or r["outcome"] != outcome:
                continue
            stop = r["return_ms"] if outcome != "unknown" and r["return_ms"] else end
            xs += [s(r["invoke_ms"]), s(stop), None]
            y = int(r["client"]) + (0.15 if op == "set" else -0.15)
            ys += [y, y, None]
        if xs:
            ax.plot(xs, ys, color=colour, lw=3 if outcome == "ok" else 1.5, solid_capstyle="butt",
                    ls="-" if outcome != "unknown" else (0, (2, 1)), label=f"{op} {outcome}")
    clients = sorted({int(r["client"]) for r in ops})
    ax.set_yticks(clients, [f"client {c}" if c < 5 else "final reads" for c in clients])
    ax.set_xlabel("seconds since the first operation")
    m = rep["measured"]
    ax.set_title(f"{m['mode']} mode, {m['nemesis'].replace('_', ' ')}: {m['operations']} operations, "
                 f"{m['anomalies']} anomalies (faults shaded)")
    ax.legend(fontsize=7, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / f"{name}.svg")
    plt.close(fig)
    return f"{name}.svg"


def run_commit(data, suite):
    """The commit a suite ran on, as contrib/lab/long-suite wrote it (data/<suite>.commit)."""
    f = data / f"{suite}.commit"
    if f.exists():
        return f.read_text().strip()
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def consistency_section(out, data):
    """One section per consistency test (tests/it/jepsen): its numbers, timeline, anomalies."""
    reports = sorted(data.glob("jepsen_*.json"))
    if not reports:
        return []
    md = ["## Consistency suite (tests/it/jepsen, docs/CONSISTENCY.md)", "",
          f"Each nemesis in each mode for ten minutes (`contrib/lab/long-suite jepsen::`), commit `{run_commit(data, 'jepsen')}`.", "",
          "| test | result | operations | writes ok / refused / unknown | reads ok / failed | checked | unchecked keys | allowed losses | anomalies | faults |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    reps = [(f.stem, json.loads(f.read_text())) for f in reports]
    for name, r in reps:
        m = r["measured"]
        w, rd = m["writes"], m["reads"]
        md.append(f"| `{name}` | {r.get('result', 'no result')} | {m['operations']} | {w['ok']} / {w['refused']} / {w['unknown']} | "
                  f"{rd['ok']} / {rd['failed']} | {m['operations_checked']} | {m['keys_unchecked']} | {m['allowed_losses']} | "
                  f"{m['anomalies']} | {m['nemesis_events']} |")
    md.append("")
    for name, r in reps:
        m = r["measured"]
        md += [f"### `{name}`", "", f"{r['check']}. {r.get('summary', '')}.", ""]
        plot = timeline_plot(out, data, name, r)
        if plot:
            md += [f"![{name}]({plot})", ""]
        md += ["Faults:", ""]
        for f in m.get("nemesis_windows", []):
            md.append(f"- {utc(f['start_ms'])}–{utc(f['end_ms'])} {f['what']} on {f['node']}: {f['note']}")
        if m.get("allowed_loss_list"):
            md += ["", "Allowed losses (async mode: kept or reported):", ""]
            for a in m["allowed_loss_list"]:
                md.append(f"- {a['key']} = {a['value']}, acknowledged {utc(a['acknowledged_ms'])}, {a['event']}: {a['kept']}")
        for a in m.get("anomaly_list", []):
            md += ["", f"**Anomaly, {a['kind']}**: {a['detail']}", ""]
            for h in a.get("history", []):
                md.append(f"    client {h['client']} thread {h['thread']} {h['op']} -> {h['ret']} "
                          f"[{utc(h['invoke_ms'])} .. {utc(h['return_ms']) if h['return_ms'] else '?'}] {h['outcome']} "
                          f"(leader {h['node']}) {h['why']}")
        md.append("")
    return md


def main():
    out = pathlib.Path(sys.argv[1])
    data = out / "data"
    results = {}
    for name, _ in TESTS:
        f = data / f"{name}.json"
        if f.exists():
            results[name] = json.loads(f.read_text())
    commit = run_commit(data, "acceptance")
    date = out.name
    plots = {
        "lag": lag_plot(out, data, results["lag_slo"]) if "lag_slo" in results else None,
        "disruption": disruption_plot(out, data, results["sync_network_disruption"]) if "sync_network_disruption" in results else None,
        "failover": failover_plot(out, results),
    }
    md = [f"# Long suite report, {date}", ""]
    md += [
        f"The acceptance plans at full length (`contrib/lab/long-suite`, `STARGATE_ACCEPTANCE=long`), commit `{commit}`,",
        "on the `--netns` lab: every node in its own network namespace, disruptions by nft drop rules, the floating",
        "address by keepalived with `contrib/keepalived/keepalived.conf.example`. One machine, 2 cores, debug build;",
        "figures are this run's, not benchmarks. Raw figures: `data/` (one JSON per test, CSV series).",
        "The replicas mirror over `git://`, except in the tests marked (ssh) and named `_ssh`: every node's URL on ssh",
        "with a fetch-only key and strict host keys (`contrib/lab/lab --transport ssh`).",
        "",
        "| plan | test | checks | result | measured |",
        "|---|---|---|---|---|",
    ]
    for name, path in TESTS:
        r = results.get(name)
        if r is None:
            log = "acceptance-ssh.nextest.log" if name.endswith("_ssh") and path.endswith("(ssh)") else "acceptance.nextest.log"
            md.append(f"| | `{path}` | | **no result**: failed, or had not finished when this report was written (see `data/{log}`) | |")
            continue
        md.append(f"| {r['plan']} | `{path}` | {r['check']} | {r['result']} | {r['summary']} |")
    md.append("")
    for key, title in (("lag", "Lag over time"), ("disruption", "Lag through network disruptions"), ("failover", "Failover events")):
        if plots[key]:
            md += [f"## {title}", "", f"![{title}]({plots[key]})", ""]
    slo = results.get("lag_slo")
    if slo:
        meas = slo["measured"]
        lim = meas["limits_s"]
        md += ["## Lag SLO: percentiles per window", "",
               f"Windows of {meas['window_s']:g} s judged by the replica's agent (`git stargate lag --json`); limits p50 {lim['p50']:g} s, p99 {lim['p99']:g} s.",
               f"The steady state lasted {meas['steady_state_s']:.0f} s, the partition {meas['partition_s']:.0f} s.", "",
               "| window (UTC) | updates | p50 (s) | p99 (s) | complete | judged |", "|---|---|---|---|---|---|"]
        ev = meas["events_ms"]
        for w in meas["windows"]:
            if w["end_ms"] < ev["start"]:
                continue
            tag = "breached" if w["breached"] else "ok"
            phase = ""
            if w["start_ms"] < ev["heal"] and w["end_ms"] > ev["cut"]:
                phase = " (partition)"
            p = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
            md.append(f"| {utc(w['start_ms'])}–{utc(w['end_ms'])}{phase} | {w['count']} | {p(w['p50_s'])} | {p(w['p99_s'])} | {w['complete']} | {tag} |")
        t = meas["trigger"]
        md += ["", "Breaching windows (start, UTC): " + ", ".join(utc(s) for s in meas["breached_windows"]) + ".", "",
               f"The alert triggered {t['after_cut_s']:.0f} s after the cut, after the second consecutive breaching window: "
               f"`{json.dumps(t['details'])}`; it resolved {meas['resolve_after_heal_s']:.0f} s after the heal.", ""]
    md += consistency_section(out, data)
    md += ["## Every measured figure", ""]
    for name, path in TESTS:
        r = results.get(name)
        if not r:
            continue
        md += [f"### `{path}`", "", f"{r['plan']}: {r['check']}.", ""]
        for k, v in r["measured"].items():
            if k == "windows":
                continue
            md.append(f"- {k}: {fmt(v)}")
        md.append("")
    (out / "README.md").write_text("\n".join(md))
    print(f"report: {out / 'README.md'}")


if __name__ == "__main__":
    main()
