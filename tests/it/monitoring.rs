//! Monitoring as operators run it (contrib/prometheus, contrib/grafana): `/metrics` of both
//! roles passes `promtool check metrics` with each family whole; its lag histogram agrees
//! with the agent's own percentiles; the shipped rules pass `promtool check rules` and their
//! unit tests; a real Prometheus scrapes the lab with the shipped configuration and rules;
//! and every query of the Grafana dashboard names metrics `/metrics` exports and returns
//! data from that Prometheus.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// A lab of two with five replicated writes (so the replica has lag figures); (lab, leader, replica).
fn lab_with_lag() -> (Lab, String, String) {
    let lab = Lab::up(2);
    let leader = lab.wait_leader(None, Duration::from_secs(10));
    let replica = if leader == "a" { "b" } else { "a" }.to_owned();
    write(&lab, &leader, &replica, "main", 5);
    // Lag is counted once the replica has measured the leader's clock (stargate(7), Lag),
    // and the leader's reachability published after its first probe: both a moment after
    // the agent turns passive.
    lab.wait_until("the replica to count the five updates' lag and probe the leader", Duration::from_secs(10), || {
        let replication = &lab.status(&replica)["replication"];
        replication["aggregate"]["count"].as_u64() >= Some(5) && replication["leader"]["reachable"] == true
    });
    (lab, leader, replica)
}

/// `n` pushes to the leader's `branch`, each waited for on the replica.
fn write(lab: &Lab, leader: &str, replica: &str, branch: &str, n: usize) {
    let c = Client::new();
    ok(c.git(".", &["init", "-q", "w"]));
    let refname = format!("refs/heads/{branch}");
    for i in 0..n {
        ok(c.git("w", &["commit", "-q", "--allow-empty", "-m", &format!("{branch} {i}")]));
        ok(c.git("w", &["push", "-q", &lab.url(leader, "kv"), &format!("HEAD:{refname}")]));
        let pushed = ok(c.git("w", &["rev-parse", "HEAD"]));
        lab.wait_until("the replica to mirror the push", Duration::from_secs(20), || {
            run(lab.git(replica, &["rev-parse", &refname])).stdout == pushed.as_bytes()
        });
    }
}

/// One family of an exposition: name, type, samples as (series name, labels, value).
struct Family {
    name: String,
    kind: String,
    samples: Vec<(String, String, String)>,
}

/// Parse `text`, asserting that each family has HELP then TYPE and then only its own
/// samples, all together, and appears once.
fn families(text: &str) -> Vec<Family> {
    let mut out: Vec<Family> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let help = line.strip_prefix("# HELP ").unwrap_or_else(|| panic!("expected HELP, got {line:?}\n{text}"));
        let name = help.split(' ').next().unwrap().to_owned();
        assert!(help.len() > name.len() + 1, "{name} has an empty HELP");
        assert!(!out.iter().any(|f| f.name == name), "{name} appears twice:\n{text}");
        let ty = lines.next().unwrap_or_default();
        let kind =
            ty.strip_prefix(&format!("# TYPE {name} ")).unwrap_or_else(|| panic!("no TYPE after HELP {name}: {ty}"));
        let mut f = Family { name: name.clone(), kind: kind.to_owned(), samples: Vec::new() };
        while let Some(line) = lines.next_if(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (metric, labels) = series.split_once('{').map_or((series, ""), |(m, l)| (m, l.trim_end_matches('}')));
            let own = metric == name
                || (kind == "histogram"
                    && ["_bucket", "_sum", "_count"].iter().any(|s| metric == format!("{name}{s}")));
            assert!(own, "{metric} among the samples of {name}:\n{text}");
            f.samples.push((metric.to_owned(), labels.to_owned(), value.to_owned()));
        }
        assert!(!f.samples.is_empty(), "{name} has no samples");
        out.push(f);
    }
    out
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian: prometheus; contrib/test.sh installs it)");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out))
}

fn metrics(lab: &Lab, node: &str) -> String {
    let (code, body) = lab.http(node, "/metrics");
    assert_eq!(code, 200, "{body}");
    body
}

fn value(families: &[Family], series: &str, labels: &str) -> Option<f64> {
    families
        .iter()
        .flat_map(|f| &f.samples)
        .find(|(s, l, _)| s == series && l.contains(labels))
        .and_then(|(_, _, v)| v.parse().ok())
}

#[test]
fn metrics_of_both_roles_pass_promtool_and_the_histogram_matches_the_agents_percentiles() {
    let (lab, leader, replica) = lab_with_lag();
    for node in [&leader, &replica] {
        let text = metrics(&lab, node);
        let (passed, said) = promtool(&["check", "metrics"], Some(&text));
        assert!(passed && said.trim().is_empty(), "promtool check metrics on {node}: {said}\n{text}");
        let fams = families(&text);
        let is_leader = node == &leader;
        let role = |r: &str| value(&fams, "stargate_role", &format!("role=\"{r}\""));
        assert_eq!(role("leader"), Some(is_leader as u8 as f64), "{text}");
        assert_eq!(role("passive"), Some(!is_leader as u8 as f64), "{text}");
        assert_eq!(value(&fams, "stargate_leader", ""), Some(is_leader as u8 as f64));
        assert_eq!(value(&fams, "stargate_leader_info", &format!("leader=\"{leader}\"")), Some(1.0), "{text}");
        let epoch = lab.record()["epoch"].as_f64().unwrap();
        assert_eq!(value(&fams, "stargate_epoch", ""), Some(epoch));
        // Both hold the five journal entries of the pushes (and the leader's first, empty one).
        let seq = value(&fams, "stargate_journal_sequence", "repository=\"kv.git\"").unwrap_or(0.0);
        assert!(seq >= 5.0, "journal position on {node}: {text}");
        for f in &fams {
            assert!(f.name.starts_with("stargate_"), "{}", f.name);
            if f.kind == "counter" {
                assert!(f.name.ends_with("_total"), "counter {} ends in _total", f.name);
            }
        }
        let page = std::fs::read_to_string(repo_root().join("man/stargate-hook.1")).unwrap();
        for f in &fams {
            assert!(page.contains(&f.name), "{} is not described in stargate-hook(1), Metrics", f.name);
        }
        // The agent's counters are there whatever the role.
        assert!(value(&fams, "stargate_sync_syncs_total", "").is_some(), "{text}");
        assert!(value(&fams, "stargate_elections_total", "").is_some(), "{text}");
    }
    let text = metrics(&lab, &replica);
    let fams = families(&text);
    assert_eq!(value(&fams, "stargate_replication_last_sync_success", "repository=\"kv.git\""), Some(1.0), "{text}");
    assert_eq!(value(&fams, "stargate_replication_lag_operations", "repository=\"kv.git\""), Some(0.0));
    assert!(value(&fams, "stargate_replication_last_lag_seconds", "repository=\"kv.git\"").is_some());

    // The histogram: cumulative, +Inf equal to _count, and the bucket where PromQL finds each
    // quantile is the bucket of the agent's own nearest-rank percentile over the same updates.
    let h = fams.iter().find(|f| f.name == "stargate_replication_lag_seconds").expect("lag histogram");
    assert_eq!(h.kind, "histogram");
    let mut buckets: Vec<(f64, f64)> = h
        .samples
        .iter()
        .filter(|(s, l, _)| s.ends_with("_bucket") && l.contains("namespace=\"kv\""))
        .map(|(_, l, v)| {
            let le = l.split("le=\"").nth(1).unwrap().trim_end_matches('"');
            (if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() }, v.parse().unwrap())
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative: {buckets:?}");
    for limit in [15.0, 120.0] {
        assert!(buckets.iter().any(|b| b.0 == limit), "the alert limit {limit} s is a bucket bound");
    }
    let count = value(&fams, "stargate_replication_lag_seconds_count", "namespace=\"kv\"").unwrap();
    assert_eq!(buckets.last().unwrap().1, count);
    let status: serde_json::Value = serde_json::from_str(&lab.http(&replica, "/status").1).unwrap();
    let aggregate = &status["replication"]["aggregate"];
    assert_eq!(aggregate["count"].as_f64(), Some(count), "the same updates: {aggregate}");
    assert!(count >= 5.0, "{count}");
    for (q, key) in [(0.5, "p50_s"), (0.99, "p99_s")] {
        let agent = aggregate[key].as_f64().unwrap();
        let rank = (q * count).ceil();
        let i = buckets.iter().position(|b| b.1 >= rank).unwrap();
        let lower = if i == 0 { 0.0 } else { buckets[i - 1].0 };
        assert!(lower < agent && agent <= buckets[i].0, "{key} {agent} in ({lower}, {}]: {buckets:?}", buckets[i].0);
    }
}

#[test]
fn shipped_rules_pass_promtool_check_and_their_unit_tests() {
    let (passed, said) = promtool(&["check", "rules", "contrib/prometheus/stargate.rules.yml"], None);
    assert!(passed && said.contains("SUCCESS"), "{said}");
    let (passed, said) = promtool(&["test", "rules", "contrib/prometheus/stargate.rules.test.yml"], None);
    assert!(passed && said.contains("SUCCESS"), "{said}");
    let (passed, said) = promtool(&["check", "config", "contrib/prometheus/prometheus.yml"], None);
    assert!(passed, "{said}");
    let out =
        run(Command::new("amtool").args(["check-config"]).arg(repo_root().join("contrib/prometheus/alertmanager.yml")));
    assert!(out.status.success(), "amtool: {}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));

    // Every alert has unit tests: one where it fires, one where it stays quiet.
    let rules = std::fs::read_to_string(repo_root().join("contrib/prometheus/stargate.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(repo_root().join("contrib/prometheus/stargate.rules.test.yml")).unwrap();
    let alerts: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).collect();
    assert!(alerts.len() >= 7, "{alerts:?}");
    for alert in alerts {
        let cases: Vec<&str> =
            tests.split("- eval_time:").filter(|c| c.contains(&format!("alertname: {alert}\n"))).collect();
        assert!(cases.iter().any(|c| c.contains("exp_alerts: []")), "{alert}: no case where it stays quiet");
        assert!(cases.iter().any(|c| c.contains("exp_labels:")), "{alert}: no case where it fires");
    }
}

/// A Prometheus started with the shipped configuration, scraping `targets` every second,
/// serving its API on `listen`. Stopped on drop.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(listen: &str, targets: &[String]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let shipped = std::fs::read_to_string(repo_root().join("contrib/prometheus/prometheus.yml")).unwrap();
        let rules = repo_root().join("contrib/prometheus/stargate.rules.yml");
        let targets: String = targets.iter().map(|t| format!("          - {t}\n")).collect();
        let mut config = String::new();
        for (from, to) in [
            ("scrape_interval: 15s", "scrape_interval: 1s".to_owned()),
            ("evaluation_interval: 15s", "evaluation_interval: 1s".to_owned()),
            ("scrape_timeout: 5s", "scrape_timeout: 1s".to_owned()),
            ("  - stargate.rules.yml\n", format!("  - {}\n", rules.display())),
            ("          - a.example.com:8080\n          - b.example.com:8080\n", targets.clone()),
        ] {
            let text = if config.is_empty() { &shipped } else { &config };
            assert!(text.contains(from), "contrib/prometheus/prometheus.yml no longer has {from:?}");
            config = text.replace(from, &to);
        }
        std::fs::write(dir.path().join("prometheus.yml"), &config).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus is installed (Debian: prometheus; contrib/test.sh installs it)");
        Prometheus { child, addr: listen.to_owned(), _dir: dir }
    }

    /// GET an API path; the JSON answer.
    fn api(&self, path: &str) -> Option<serde_json::Value> {
        let request = format!("GET {path} HTTP/1.0\r\n\r\n");
        let (code, _, body) = http_raw_quiet(&self.addr, request.as_bytes())?;
        (code == 200).then(|| serde_json::from_str(&body).ok()).flatten()
    }

    fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let answer = self.api(&format!("/api/v1/query?query={}", percent(promql)));
        let answer = answer.unwrap_or_else(|| panic!("no answer to {promql}: {}", self.log()));
        assert_eq!(answer["status"], "success", "{promql}: {answer}");
        answer["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `http_raw`, but None rather than a panic while nothing listens yet.
fn http_raw_quiet(addr: &str, request: &[u8]) -> Option<(u16, String, String)> {
    std::net::TcpStream::connect(addr).ok()?;
    http_raw(addr, request)
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Every PromQL expression of the dashboard: panel targets and annotations; and the metric
/// of each `label_values(metric, label)` variable.
fn dashboard_queries() -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(repo_root().join("contrib/grafana/stargate.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut panels = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            panels.push(target["expr"].as_str().expect("every target has an expr").to_owned());
        }
    }
    let mut others: Vec<String> = dash["annotations"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["expr"].as_str().unwrap().to_owned())
        .collect();
    for var in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"]["query"].as_str() {
            let inner = q.strip_prefix("label_values(").unwrap().rsplit_once(',').unwrap().0;
            others.push(inner.to_owned());
        }
    }
    (panels, others)
}

/// The names in `expr` that are not PromQL's own: metric names, and label names of matchers
/// and groupings.
fn names_in(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    const PROMQL: &[&str] = &[
        "sum",
        "max",
        "min",
        "avg",
        "count",
        "rate",
        "increase",
        "irate",
        "histogram_quantile",
        "time",
        "changes",
        "by",
        "without",
        "on",
        "ignoring",
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "vector",
    ];
    let (mut metrics, mut labels) = (BTreeSet::new(), BTreeSet::new());
    let chars: Vec<char> = expr.chars().collect();
    let (mut i, mut in_braces, mut in_grouping) = (0, false, false);
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
        } else if c == '{' {
            in_braces = true;
        } else if c == '}' {
            in_braces = false;
        } else if c == ')' {
            in_grouping = false;
        } else if c.is_ascii_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i + 1 < chars.len() && (chars[i + 1].is_ascii_alphanumeric() || "_:$".contains(chars[i + 1])) {
                i += 1;
            }
            let word: String = chars[start..=i].iter().collect();
            if in_braces || in_grouping {
                labels.insert(word);
            } else if word == "by" || word == "on" || word == "without" || word == "ignoring" {
                in_grouping = true;
            } else if !PROMQL.contains(&word.as_str()) && !word.starts_with('$') {
                metrics.insert(word);
            }
        } else if c.is_ascii_digit() || c == '.' {
            while i + 1 < chars.len() && (chars[i + 1].is_ascii_alphanumeric() || chars[i + 1] == '.') {
                i += 1;
            }
        }
        i += 1;
    }
    (metrics, labels)
}

#[test]
fn a_real_prometheus_scrapes_the_lab_and_every_dashboard_query_returns_data() {
    let (lab, leader, replica) = lab_with_lag();
    // What /metrics really exports, on either role: series names and label names.
    let (mut series, mut label_names) = (BTreeSet::new(), BTreeSet::from(["job".to_owned(), "instance".to_owned()]));
    for node in [&leader, &replica] {
        for f in families(&metrics(&lab, node)) {
            for (name, labels, _) in f.samples {
                series.insert(name);
                for pair in labels.split(',').filter(|p| !p.is_empty()) {
                    label_names.insert(pair.split('=').next().unwrap().to_owned());
                }
            }
        }
    }
    let (panels, others) = dashboard_queries();
    assert!(panels.len() >= 15, "{panels:?}");
    for expr in panels.iter().chain(&others) {
        let (metrics, labels) = names_in(expr);
        assert!(!metrics.is_empty(), "no metric found in {expr}");
        for m in metrics {
            assert!(series.contains(&m), "the dashboard uses {m}, which /metrics does not export ({expr})");
        }
        for l in labels {
            assert!(label_names.contains(&l), "the dashboard uses the label {l}, which /metrics has not ({expr})");
        }
    }

    let targets: Vec<String> = lab.nodes.iter().map(|n| format!("{}:8080", lab.ip(n))).collect();
    // Not 9090: a Prometheus that the package started for the whole machine may hold it.
    let prom = Prometheus::start(&format!("{}.200:19090", lab.net), &targets);
    lab.wait_until("Prometheus to scrape both nodes", Duration::from_secs(30), || {
        prom.api("/api/v1/query?query=stargate_up")
            .is_some_and(|a| a["data"]["result"].as_array().is_some_and(|r| r.len() == 2))
    });
    // Updates while Prometheus watches, enough samples for rate() over 30 s, and two
    // evaluations of every rule.
    write(&lab, &leader, &replica, "more", 5);
    std::thread::sleep(Duration::from_secs(4));
    for expr in &panels {
        let promql = expr.replace("$job", "stargate").replace("$node", ".+").replace("$__rate_interval", "30s");
        let result = prom.query(&promql);
        assert!(!result.is_empty(), "the dashboard's {promql} returns nothing from a live Prometheus");
    }
    for expr in &others {
        prom.query(&expr.replace("$job", "stargate"));
    }
    let up = prom.query("stargate_leader == 1");
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["metric"]["node"], leader.as_str());

    // The shipped rules load and evaluate without error against real data; the recording
    // rule finds the replica's p50; and a healthy cluster raises no alert.
    let rules = prom.api("/api/v1/rules").expect("rules");
    let groups = rules["data"]["groups"].as_array().unwrap();
    let all: Vec<&serde_json::Value> = groups.iter().flat_map(|g| g["rules"].as_array().unwrap()).collect();
    assert!(all.len() >= 9, "{rules}");
    for rule in &all {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    let p50 = prom.query(&format!("node:stargate_replication_lag_seconds:p50_5m{{node=\"{replica}\"}}"));
    let p50: f64 = p50.first().and_then(|s| s["value"][1].as_str()).and_then(|v| v.parse().ok()).expect("p50");
    assert!(p50.is_finite() && p50 < 15.0, "{p50}");
    let alerts = prom.api("/api/v1/alerts").expect("alerts");
    assert_eq!(alerts["data"]["alerts"].as_array().map(Vec::len), Some(0), "a healthy lab raises {alerts}");
}
