//! Settings, read from `git config` only (stargate(7), CONFIGURATION): one typed accessor per key, whose doc
//! comment states the default. A bad value is an error naming the key and the value.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad value '{value}' for '{key}': {why} (see stargate(7))")]
    Invalid { key: String, value: String, why: &'static str },
    #[error("'{0}' is not set (every key is described in stargate(7))")]
    Missing(&'static str),
    #[error("cannot read git config: {0}")]
    Read(#[from] crate::wire::git::Error),
    /// A file a key names (a PEM file for etcd) that cannot be read.
    #[error("bad value '{}' for '{key}': {} (see stargate(7))", .path.display(), unreadable(.source))]
    Unreadable { key: &'static str, path: PathBuf, source: std::io::Error },
}

fn unreadable(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::NotFound { "no such file" } else { "cannot be read" }
}

/// A snapshot of every config entry visible from one directory.
#[derive(Debug, Default, Clone)]
pub struct Config {
    /// Every value of each key in file order; the last one wins, as with `git config --get`.
    values: HashMap<String, Vec<String>>,
}

impl Config {
    /// Read the config visible from `dir` (or from the current directory).
    pub fn load(dir: Option<&Path>) -> Result<Config, Error> {
        Ok(Config::from_entries(crate::wire::git::config_list(dir)?))
    }

    pub fn from_entries(entries: impl IntoIterator<Item = (String, String)>) -> Config {
        let mut values: HashMap<String, Vec<String>> = HashMap::new();
        for (key, value) in entries {
            values.entry(key).or_default().push(value);
        }
        Config { values }
    }

    /// The value of `key`, named as documented (`stargate.lease.staleAfter`); git folds the
    /// section and variable name to lower case, never the subsection.
    fn raw(&self, key: &str) -> Option<&str> {
        self.raw_all(key).last().map(String::as_str)
    }

    /// Every value of a multi-valued key, in order.
    fn raw_all(&self, key: &str) -> &[String] {
        let folded = match key.split('.').collect::<Vec<_>>()[..] {
            [section, variable] => format!("{}.{}", section.to_lowercase(), variable.to_lowercase()),
            [section, ref sub @ .., variable] => {
                format!("{}.{}.{}", section.to_lowercase(), sub.join("."), variable.to_lowercase())
            }
            _ => key.to_owned(),
        };
        self.values.get(&folded).map_or(&[], Vec::as_slice)
    }

    /// A boolean as git reads one: true, yes, on, 1; false, no, off, 0 or empty.
    fn boolean(&self, key: &str, default: bool) -> Result<bool, Error> {
        match self.raw(key).map(|v| (v, v.to_ascii_lowercase())) {
            None => Ok(default),
            Some((_, v)) if matches!(v.as_str(), "true" | "yes" | "on" | "1") => Ok(true),
            Some((_, v)) if matches!(v.as_str(), "false" | "no" | "off" | "0" | "") => Ok(false),
            Some((v, _)) => Err(invalid(key, v, "expected true or false")),
        }
    }

    fn duration(&self, key: &str, default: Duration) -> Result<Duration, Error> {
        self.raw(key).map_or(Ok(default), |v| parse_duration(v).ok_or_else(|| invalid(key, v, DURATION)))
    }

    /// `stargate.node`: this node's id. Default: the host name.
    pub fn node(&self) -> Result<String, Error> {
        let id = match self.raw("stargate.node") {
            Some(v) => v.to_owned(),
            None => hostname(),
        };
        if valid_id(&id) { Ok(id) } else { Err(invalid("stargate.node", &id, ID)) }
    }

    /// `stargate.lock`: the leader lease: an absolute path on the shared volume, or
    /// `etcd://host:port[,host:port...]/<key>` (`etcds://` for TLS). No default.
    pub fn lock(&self) -> Result<LockSpec, Error> {
        let key = "stargate.lock";
        let v = self.raw(key).ok_or(Error::Missing(key))?;
        let (scheme, rest) = match v.split_once("://") {
            None if Path::new(v).is_absolute() => return Ok(LockSpec::File(PathBuf::from(v))),
            None => return Err(invalid(key, v, "expected an absolute path or etcd://host:port/<key>")),
            Some(split) => split,
        };
        let tls = match scheme {
            "etcd" => false,
            "etcds" => true,
            _ => return Err(invalid(key, v, "expected an absolute path or etcd://host:port/<key>")),
        };
        let (hosts, path) = rest.split_once('/').ok_or_else(|| invalid(key, v, "no key after the endpoints"))?;
        let path = format!("/{path}");
        if path.len() < 2
            || path.ends_with('/')
            || path.contains("//")
            || path.chars().any(|c| c.is_control() || c == ' ')
        {
            return Err(invalid(key, v, "expected a key such as /stargate/leader"));
        }
        let endpoints: Vec<String> = hosts.split(',').map(str::to_owned).collect();
        for e in &endpoints {
            let ok = e.rsplit_once(':').is_some_and(|(h, p)| {
                !h.is_empty()
                    && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_[]:".contains(&b))
                    && p.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                return Err(invalid(key, v, "each endpoint must be host:port"));
            }
        }
        Ok(LockSpec::Etcd { endpoints, key: path, tls })
    }

    /// `stargate.lease.ttl`: the etcd lease's time to live; a leader that could not renew
    /// it for this long, less a safety margin of a fifth, stops accepting writes.
    /// Default: 2s, etcd's shortest at its default election timeout (docs/ARCHITECTURE.md,
    /// The etcd lease, has the reasoning).
    pub fn lease_ttl(&self) -> Result<Duration, Error> {
        let key = "stargate.lease.ttl";
        let d = self.duration(key, Duration::from_secs(2))?;
        if d < Duration::from_secs(2) || d.subsec_millis() != 0 {
            return Err(invalid(key, self.raw(key).unwrap_or(""), "expected whole seconds, at least 2s"));
        }
        Ok(d)
    }

    /// `stargate.etcd.timeout`: how long one request to one etcd endpoint may take before
    /// the next endpoint is tried. Default: 500ms.
    pub fn etcd_timeout(&self) -> Result<Duration, Error> {
        self.positive_duration("stargate.etcd.timeout", Duration::from_millis(500))
    }

    /// `stargate.etcd.ca`: the CA certificate (PEM) an `etcds://` lock verifies etcd's
    /// certificate with. Required for `etcds://`.
    pub fn etcd_ca(&self) -> Result<Option<PathBuf>, Error> {
        self.optional_absolute_path("stargate.etcd.ca")
    }

    /// `stargate.etcd.cert`: this node's client certificate (PEM) for `etcds://`. Default:
    /// none (no client certificate); set with `stargate.etcd.key`.
    pub fn etcd_cert(&self) -> Result<Option<PathBuf>, Error> {
        self.optional_absolute_path("stargate.etcd.cert")
    }

    /// `stargate.etcd.key`: the private key (PEM) of `stargate.etcd.cert`. Default: none.
    pub fn etcd_key(&self) -> Result<Option<PathBuf>, Error> {
        self.optional_absolute_path("stargate.etcd.key")
    }

    fn optional_absolute_path(&self, key: &'static str) -> Result<Option<PathBuf>, Error> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) if Path::new(v).is_absolute() => Ok(Some(PathBuf::from(v))),
            Some(v) => Err(invalid(key, v, "expected an absolute path")),
        }
    }

    /// `stargate.root`: the directory holding this node's bare repositories. No default.
    pub fn root(&self) -> Result<PathBuf, Error> {
        self.absolute_path("stargate.root")
    }

    /// Where the agent publishes this node's state for the hooks: `<root>/.stargate`.
    pub fn state_dir(&self) -> Result<PathBuf, Error> {
        Ok(self.root()?.join(STATE_DIR))
    }

    /// `stargate.<id>.url`: how peers and clients reach node `<id>`'s repositories. No default.
    pub fn node_url(&self, id: &str) -> Result<Option<String>, Error> {
        let key = format!("stargate.{id}.url");
        match self.raw(&key) {
            Some(v) if v.is_empty() || v.chars().any(char::is_control) => {
                Err(invalid(&key, v, "expected a URL or path"))
            }
            v => Ok(v.map(str::to_owned)),
        }
    }

    /// `stargate.<id>.health`: node `<id>`'s health responder, `http://host:port`. No default.
    pub fn node_health(&self, id: &str) -> Result<Option<String>, Error> {
        let key = format!("stargate.{id}.health");
        match self.raw(&key) {
            Some(v) if !valid_health_url(v) => Err(invalid(&key, v, "expected http://host:port")),
            v => Ok(v.map(str::to_owned)),
        }
    }

    /// `stargate.<id>.upstream`: the node that node `<id>` mirrors from while it is a
    /// replica, instead of the leader (a cascading replica; stargate(7), Cascading
    /// replicas). Another configured node; no cycles; not in quorum mode. Default: unset
    /// (the leader).
    pub fn node_upstream(&self, id: &str) -> Result<Option<String>, Error> {
        let key = format!("stargate.{id}.upstream");
        let Some(v) = self.raw(&key) else { return Ok(None) };
        if !valid_id(v) || self.raw(&format!("stargate.{v}.url")).is_none() {
            return Err(invalid(&key, v, "expected the id of a node with a stargate.<id>.url"));
        }
        if v == id {
            return Err(invalid(&key, v, "a node cannot mirror from itself"));
        }
        if self.replication_quorum_mode()? {
            return Err(invalid(&key, v, "quorum mode stages every write on the leader's peers directly"));
        }
        // Following upstreams from `id` must end at a node without one.
        let mut seen = vec![id.to_owned()];
        let mut at = v.to_owned();
        while let Some(next) = self.raw(&format!("stargate.{at}.upstream")) {
            seen.push(at.clone());
            if seen.iter().any(|n| n == next) {
                return Err(invalid(&key, v, "the upstreams form a cycle"));
            }
            at = next.to_owned();
        }
        Ok(Some(v.to_owned()))
    }

    /// Ids of the nodes that have a `stargate.<id>.url`, sorted.
    pub fn nodes(&self) -> Vec<String> {
        let mut ids: Vec<String> = (self.values.keys())
            .filter_map(|k| k.strip_prefix("stargate.")?.strip_suffix(".url"))
            .filter(|id| valid_id(id))
            .map(str::to_owned)
            .collect();
        ids.sort();
        ids
    }

    /// `stargate.lease.interval`: how often the agent contends for the lease and
    /// refreshes its state. Default: 500ms.
    pub fn lease_interval(&self) -> Result<Duration, Error> {
        self.positive_duration("stargate.lease.interval", Duration::from_millis(500))
    }

    /// `stargate.lease.staleAfter`: agent state older than this means the agent is gone
    /// and the node refuses writes. Default: 2s.
    pub fn lease_stale_after(&self) -> Result<Duration, Error> {
        self.duration("stargate.lease.staleAfter", Duration::from_secs(2))
    }

    /// `stargate.health.timeout`: how long the health responder waits for a whole request.
    /// Default: 2s.
    pub fn health_timeout(&self) -> Result<Duration, Error> {
        self.duration("stargate.health.timeout", Duration::from_secs(2))
    }

    /// `stargate.health.idleExit`: under socket activation, exit after this long without
    /// a connection. Default: 60s.
    pub fn health_idle_exit(&self) -> Result<Duration, Error> {
        self.duration("stargate.health.idleExit", Duration::from_secs(60))
    }

    /// `kv.namespace`: the namespace `git kv` uses without `--namespace`. Default: `default`.
    pub fn kv_namespace(&self) -> &str {
        self.raw("kv.namespace").unwrap_or("default")
    }

    /// `kv.remote`: the remote `git kv` reads and writes. Default: `origin`.
    pub fn kv_remote(&self) -> &str {
        self.raw("kv.remote").unwrap_or("origin")
    }

    /// `kv.pushAttempts`: how many times at most `git kv` tries a write that loses races
    /// with other writers (within `kv.timeout`). Default: 1000.
    pub fn kv_push_attempts(&self) -> Result<u32, Error> {
        self.number("kv.pushAttempts", 1000, 1..=1000)
    }

    /// `kv.timeout`: how long at most `git kv` keeps trying a write that loses races with
    /// other writers (jittered backoff between tries). Default: 60s.
    pub fn kv_timeout(&self) -> Result<Duration, Error> {
        self.positive_duration("kv.timeout", Duration::from_secs(60))
    }

    /// `stargate.sync.interval`: how often a replica mirrors the leader when no write
    /// signal arrives. Default: 30s.
    pub fn sync_interval(&self) -> Result<Duration, Error> {
        self.positive_duration("stargate.sync.interval", Duration::from_secs(30))
    }

    /// `stargate.sync.sweepInterval`: while the leader's change summary can be read, how often
    /// a passive node syncs each repository even though the summary named none of its
    /// writes (the safety net for a lost line). Default: 1h.
    pub fn sync_sweep_interval(&self) -> Result<Duration, Error> {
        self.positive_duration("stargate.sync.sweepInterval", Duration::from_secs(3600))
    }

    /// `stargate.sync.timeout`: the watchdog of one sync; on expiry the fetch and its
    /// children are killed and a retry is scheduled. Default: 25s.
    pub fn sync_timeout(&self) -> Result<Duration, Error> {
        self.positive_duration("stargate.sync.timeout", Duration::from_secs(25))
    }

    /// `stargate.sync.connectTimeout`: how long a sync waits for the other node's Git
    /// server to accept the connection and advertise what it speaks (every transport), so
    /// that a machine that is gone fails a sync in that time. Default: 2s.
    pub fn sync_connect_timeout(&self) -> Result<Duration, Error> {
        self.positive_duration("stargate.sync.connectTimeout", Duration::from_secs(2))
    }

    /// `stargate.sync.sshMultiplex`: whether a node's syncs over ssh share one connection
    /// per peer (OpenSSH's `ControlMaster`, kept 60 s after its last use), each sync a
    /// channel of it, so that only the first pays ssh's handshake. Default: true.
    pub fn sync_ssh_multiplex(&self) -> Result<bool, Error> {
        self.boolean("stargate.sync.sshMultiplex", true)
    }

    /// `stargate.sync.uploadPack`: the program a replica runs on the leader for `ssh://`
    /// and local URLs (`git fetch --upload-pack`). Default: git's own.
    pub fn sync_upload_pack(&self) -> Option<&str> {
        self.raw("stargate.sync.uploadPack")
    }

    /// `stargate.retry.attempts`: retries of a failed sync before it counts as failed.
    /// Default: 5.
    pub fn retry_attempts(&self) -> Result<u32, Error> {
        self.number("stargate.retry.attempts", 5, 0..=100)
    }

    /// `stargate.retry.multiplier`: growth of the backoff ceiling per retry. Default: 2.
    pub fn retry_multiplier(&self) -> Result<f64, Error> {
        let key = "stargate.retry.multiplier";
        match self.raw(key) {
            None => Ok(2.0),
            Some(v) => match v.trim().parse::<f64>() {
                Ok(m) if (1.0..=100.0).contains(&m) => Ok(m),
                _ => Err(invalid(key, v, "expected a number from 1 to 100")),
            },
        }
    }

    /// `stargate.retry.baseDelay`: the first retry's backoff ceiling. Default: 1s.
    pub fn retry_base_delay(&self) -> Result<Duration, Error> {
        self.duration("stargate.retry.baseDelay", Duration::from_secs(1))
    }

    /// `stargate.retry.maxDelay`: the largest backoff ceiling. Default: 60s.
    pub fn retry_max_delay(&self) -> Result<Duration, Error> {
        self.duration("stargate.retry.maxDelay", Duration::from_secs(60))
    }

    /// `stargate.retry.retryable` (multi-valued): error classes (`timeout`, `connection`,
    /// `eof`, `http5xx`, `transport`) or text found in git's error output that make a sync
    /// worth retrying. Default: all five classes.
    pub fn retry_retryable(&self) -> Vec<String> {
        let values = self.raw_all("stargate.retry.retryable");
        if values.is_empty() {
            ["timeout", "connection", "eof", "http5xx", "transport"].map(String::from).to_vec()
        } else {
            values.to_vec()
        }
    }

    /// `stargate.statsd`: `host:port` of a StatsD (DogStatsD) server. Default: none, no metrics.
    pub fn statsd(&self) -> Result<Option<String>, Error> {
        let key = "stargate.statsd";
        match self.raw(key) {
            Some(v) if v.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) => {
                Err(invalid(key, v, "expected host:port"))
            }
            v => Ok(v.map(str::to_owned)),
        }
    }

    /// `stargate.metrics.interval`: how often metrics are sent to StatsD. Default: 10s.
    pub fn metrics_interval(&self) -> Result<Duration, Error> {
        self.positive_duration("stargate.metrics.interval", Duration::from_secs(10))
    }

    /// `stargate.alert.url`: where lag alerts are POSTed (PagerDuty Events v2, e.g.
    /// `https://events.pagerduty.com/v2/enqueue`). Default: none, no alerts.
    pub fn alert_url(&self) -> Result<Option<String>, Error> {
        let key = "stargate.alert.url";
        match self.raw(key) {
            Some(v) if !(v.starts_with("http://") || v.starts_with("https://")) => {
                Err(invalid(key, v, "expected an http(s) URL"))
            }
            v => Ok(v.map(str::to_owned)),
        }
    }

    /// `stargate.alert.routingKey`: the PagerDuty integration key. Default: none.
    pub fn alert_routing_key(&self) -> Option<&str> {
        self.raw("stargate.alert.routingKey")
    }

    /// `stargate.alert.window`: length of the rolling lag windows. Default: 5m.
    pub fn alert_window(&self) -> Result<Duration, Error> {
        self.positive_duration("stargate.alert.window", Duration::from_secs(300))
    }

    /// `stargate.alert.p50`: a window whose median lag exceeds this breaches. Default: 15s.
    pub fn alert_p50(&self) -> Result<Duration, Error> {
        self.duration("stargate.alert.p50", Duration::from_secs(15))
    }

    /// `stargate.alert.p99`: a window whose 99th-percentile lag exceeds this breaches.
    /// Default: 120s.
    pub fn alert_p99(&self) -> Result<Duration, Error> {
        self.duration("stargate.alert.p99", Duration::from_secs(120))
    }

    /// `stargate.promote.maxLag`: a planned promotion is refused when the oldest write this
    /// node lacks was accepted by the leader longer ago than this. Default: 10s.
    pub fn promote_max_lag(&self) -> Result<Duration, Error> {
        self.duration("stargate.promote.maxLag", Duration::from_secs(10))
    }

    /// `stargate.promote.cooldown`: a planned promotion is refused this soon after the last
    /// promotion (planned or forced). Default: 1m.
    pub fn promote_cooldown(&self) -> Result<Duration, Error> {
        self.duration("stargate.promote.cooldown", Duration::from_secs(60))
    }

    /// `stargate.promote.timeout`: how long a planned promotion waits for the leader to
    /// drain and let go of the lease before it gives up, changing nothing. Default: 10s.
    pub fn promote_timeout(&self) -> Result<Duration, Error> {
        self.positive_duration("stargate.promote.timeout", Duration::from_secs(10))
    }

    /// `stargate.promote.drainTimeout`: how long a draining leader waits for the writes
    /// already in flight to commit or abort. Default: 5s.
    pub fn promote_drain_timeout(&self) -> Result<Duration, Error> {
        self.positive_duration("stargate.promote.drainTimeout", Duration::from_secs(5))
    }

    /// `stargate.catchup.timeout`: how long a newly elected node spends catching up to the
    /// previous leader's journal before it accepts writes anyway. Default: 10s.
    pub fn catchup_timeout(&self) -> Result<Duration, Error> {
        self.duration("stargate.catchup.timeout", Duration::from_secs(10))
    }

    /// `stargate.catchup.connectTimeout`: how long the catch-up waits for the previous
    /// leader's Git server to answer (every transport) before it leads without catching
    /// up. Default: 1s.
    pub fn catchup_connect_timeout(&self) -> Result<Duration, Error> {
        self.positive_duration("stargate.catchup.connectTimeout", Duration::from_secs(1))
    }

    /// `receive.procReceiveRefs` (git's own key, multi-valued): whether one of its values
    /// hands `refs/for/kv/` to the `proc-receive` hook, so that the leader applies `git kv`
    /// changes (stargate(7), Managed repositories). Default: none, so no.
    pub fn kv_changes_applied(&self) -> bool {
        self.raw_all("receive.procReceiveRefs").iter().any(|v| {
            let (modifiers, prefix) = v.split_once(':').unwrap_or(("", v));
            !modifiers.contains('!') && !prefix.is_empty() && "refs/for/kv/default".starts_with(prefix)
        })
    }

    /// `stargate.journal.keep`: entries per journal generation; every this many entries a
    /// new generation starts, and only the current and the previous one stay reachable.
    /// Default: 10000.
    pub fn journal_keep(&self) -> Result<u64, Error> {
        self.number("stargate.journal.keep", 10_000, 2..=100_000_000).map(u64::from)
    }

    /// `stargate.replication.mode`: `async` (a write is acknowledged once on the leader) or
    /// `quorum` (once staged on a majority). Default: `async`.
    pub fn replication_quorum_mode(&self) -> Result<bool, Error> {
        let key = "stargate.replication.mode";
        match self.raw(key).map(str::to_ascii_lowercase).as_deref() {
            None | Some("async") => Ok(false),
            Some("quorum") => Ok(true),
            Some(_) => Err(invalid(key, self.raw(key).unwrap_or(""), "expected async or quorum")),
        }
    }

    /// `stargate.replication.quorum`: how many nodes, the leader counted, must have staged
    /// a write before it is acknowledged in quorum mode; at least a majority of the nodes
    /// configured. Default: a majority.
    pub fn replication_quorum(&self) -> Result<usize, Error> {
        let key = "stargate.replication.quorum";
        let nodes = self.nodes().len().max(1);
        let majority = nodes / 2 + 1;
        match self.raw(key) {
            None => Ok(majority),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if (majority..=nodes).contains(&n) => Ok(n),
                _ => Err(invalid(key, v, "expected a whole number from a majority of the nodes to all of them")),
            },
        }
    }

    /// `stargate.quorum.timeout`: how long the leader's hook waits for a quorum before the
    /// write is refused. Default: 5s.
    pub fn quorum_timeout(&self) -> Result<Duration, Error> {
        self.positive_duration("stargate.quorum.timeout", Duration::from_secs(5))
    }

    fn positive_duration(&self, key: &str, default: Duration) -> Result<Duration, Error> {
        let d = self.duration(key, default)?;
        if d.is_zero() {
            return Err(invalid(key, self.raw(key).unwrap_or(""), "must be more than 0"));
        }
        Ok(d)
    }

    fn number(&self, key: &str, default: u32, range: std::ops::RangeInclusive<u32>) -> Result<u32, Error> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) if range.contains(&n) => Ok(n),
                _ => Err(invalid(key, v, "expected a whole number in range")),
            },
        }
    }

    fn absolute_path(&self, key: &'static str) -> Result<PathBuf, Error> {
        let v = self.raw(key).ok_or(Error::Missing(key))?;
        let path = PathBuf::from(v);
        if path.is_absolute() { Ok(path) } else { Err(invalid(key, v, "expected an absolute path")) }
    }

    /// Parse every node-level key this program knows, so that a bad value anywhere is
    /// reported up front instead of when a code path first reads it.
    pub fn validate(&self) -> Result<(), Error> {
        self.node()?;
        self.lease_interval()?;
        self.lease_stale_after()?;
        self.health_timeout()?;
        self.health_idle_exit()?;
        self.kv_push_attempts()?;
        self.kv_timeout()?;
        self.sync_interval()?;
        self.sync_sweep_interval()?;
        self.sync_timeout()?;
        self.sync_connect_timeout()?;
        self.sync_ssh_multiplex()?;
        self.retry_attempts()?;
        self.retry_multiplier()?;
        self.retry_base_delay()?;
        self.retry_max_delay()?;
        self.statsd()?;
        self.metrics_interval()?;
        self.alert_url()?;
        self.alert_window()?;
        self.alert_p50()?;
        self.alert_p99()?;
        self.promote_max_lag()?;
        self.promote_cooldown()?;
        self.promote_timeout()?;
        self.promote_drain_timeout()?;
        self.catchup_timeout()?;
        self.journal_keep()?;
        self.replication_quorum_mode()?;
        self.replication_quorum()?;
        self.quorum_timeout()?;
        for id in self.nodes() {
            self.node_url(&id)?;
            self.node_health(&id)?;
            self.node_upstream(&id)?;
        }
        if let Some(v) = self.raw("stargate.root")
            && !Path::new(v).is_absolute()
        {
            return Err(invalid("stargate.root", v, "expected an absolute path"));
        }
        if self.raw("stargate.lock").is_some() {
            let lock = self.lock()?;
            let tls = matches!(lock, LockSpec::Etcd { tls: true, .. });
            let ttl = self.lease_ttl()?;
            let timeout = self.etcd_timeout()?;
            // A keep-alive whose first member does not answer must still reach another
            // before the leader's writes stop (docs/ARCHITECTURE.md, The etcd lease).
            if matches!(lock, LockSpec::Etcd { .. }) && self.lease_interval()? + timeout * 2 > ttl - ttl / 5 {
                let value = self.raw("stargate.lease.ttl").unwrap_or("2s");
                return Err(invalid(
                    "stargate.lease.ttl",
                    value,
                    "too short: stargate.lease.interval + 2 x stargate.etcd.timeout must fit in four fifths of it",
                ));
            }
            let (ca, cert, key) = (self.etcd_ca()?, self.etcd_cert()?, self.etcd_key()?);
            if tls && ca.is_none() {
                return Err(Error::Missing("stargate.etcd.ca"));
            }
            match (&cert, &key) {
                (Some(_), None) => return Err(Error::Missing("stargate.etcd.key")),
                (None, Some(_)) => return Err(Error::Missing("stargate.etcd.cert")),
                _ => {}
            }
        }
        Ok(())
    }
}

/// `stargate.lock`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockSpec {
    File(PathBuf),
    Etcd { endpoints: Vec<String>, key: String, tls: bool },
}

/// The directory under `stargate.root` where the agent keeps node state.
pub const STATE_DIR: &str = ".stargate";

const DURATION: &str = "expected a duration like 30s, 2m or 500ms";
const ID: &str = "expected 1-64 of A-Z a-z 0-9 . _ -, not starting with '.' or '-'";

fn invalid(key: &str, value: &str, why: &'static str) -> Error {
    Error::Invalid { key: key.to_owned(), value: value.to_owned(), why }
}

/// `500ms`, `30s`, `2m`, `1h`; a unit is required so that `30` is never misread.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// Node ids appear in file names, refs, metric tags and log lines.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && !id.starts_with(['.', '-'])
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn valid_health_url(v: &str) -> bool {
    v.strip_prefix("http://").is_some_and(|rest| {
        let authority = rest.split('/').next().unwrap_or("");
        authority.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        for bad in ["30", "s", "-1s", "1.5s", "10 s", "1d", "", "99999999999999999999s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn proc_receive_refs_that_hand_over_git_kv_changes() {
        let cfg = |values: &[&str]| {
            Config::from_entries(values.iter().map(|v| ("receive.procreceiverefs".to_owned(), (*v).to_owned())))
        };
        for yes in [&["refs/for/kv/"][..], &["refs/for/"], &["refs/for/review/", "refs/for/kv"], &["a:refs/for/kv/"]] {
            assert!(cfg(yes).kv_changes_applied(), "{yes:?}");
        }
        for no in [&[][..], &["refs/for/review/"], &["!:refs/for/kv/"], &[""], &["refs/kv/"]] {
            assert!(!cfg(no).kv_changes_applied(), "{no:?}");
        }
    }

    #[test]
    fn bad_value_names_key_and_value() {
        let cfg = Config::from_entries([("stargate.lease.interval".into(), "fast".into())]);
        let err = cfg.lease_interval().unwrap_err().to_string();
        assert!(err.contains("'stargate.lease.interval'") && err.contains("'fast'"), "{err}");
    }

    /// An upstream names another configured node, never itself, never in a cycle, and
    /// not in quorum mode; each refusal names the key.
    #[test]
    fn upstreams_form_a_tree() {
        let cfg = |extra: &[(&str, &str)]| {
            let base = [("stargate.a.url", "git://a/"), ("stargate.b.url", "git://b/"), ("stargate.c.url", "git://c/")];
            Config::from_entries(base.iter().chain(extra).map(|(k, v)| (k.to_string(), v.to_string())))
        };
        let tree = cfg(&[("stargate.c.upstream", "b")]);
        assert_eq!(tree.node_upstream("c").unwrap().as_deref(), Some("b"));
        assert_eq!(tree.node_upstream("b").unwrap(), None);
        tree.validate().unwrap();
        for (extra, why) in [
            (vec![("stargate.c.upstream", "x")], "expected the id of a node"),
            (vec![("stargate.c.upstream", "c")], "cannot mirror from itself"),
            (vec![("stargate.c.upstream", "b"), ("stargate.b.upstream", "c")], "cycle"),
            (vec![("stargate.c.upstream", "b"), ("stargate.b.upstream", "a"), ("stargate.a.upstream", "c")], "cycle"),
            (vec![("stargate.c.upstream", "b"), ("stargate.replication.mode", "quorum")], "quorum mode"),
        ] {
            let err = cfg(&extra).validate().unwrap_err().to_string();
            assert!(err.contains(".upstream'") && err.contains(why), "{extra:?}: {err}");
        }
    }

    #[test]
    fn node_ids() {
        assert!(valid_id("node-1.a_b"));
        for bad in ["", ".a", "-a", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}

/// Client settings read by `git-remote-stargate` (the `stargate::` remote helper).
impl Config {
    /// `stargate.transport`: how a `stargate::` URL reaches a name that is not a configured
    /// node id (a host name or floating address): `ssh`, `git`, `file` or `https`.
    /// Default: `ssh`.
    pub fn transport(&self) -> Result<Transport, Error> {
        let key = "stargate.transport";
        match self.raw(key).map(str::to_ascii_lowercase).as_deref() {
            None | Some("ssh") => Ok(Transport::Ssh),
            Some("git") => Ok(Transport::Git),
            Some("file") => Ok(Transport::File),
            Some("https") => Ok(Transport::Https),
            Some(_) => Err(invalid(key, self.raw(key).unwrap_or(""), "expected ssh, git, file or https")),
        }
    }

    /// `stargate.readFrom`: where fetch, clone and ls-remote through a `stargate::` URL read
    /// from: `leader`, `replica` (a replica within `stargate.maxReadLag`, else the leader)
    /// or `any` (the first node that qualifies). Pushes always go to the leader.
    /// Default: `leader`.
    pub fn read_from(&self) -> Result<ReadFrom, Error> {
        let key = "stargate.readFrom";
        match self.raw(key).map(str::to_ascii_lowercase).as_deref() {
            None | Some("leader") => Ok(ReadFrom::Leader),
            Some("replica") => Ok(ReadFrom::Replica),
            Some("any") => Ok(ReadFrom::Any),
            Some(_) => Err(invalid(key, self.raw(key).unwrap_or(""), "expected leader, replica or any")),
        }
    }

    /// `stargate.maxReadLag`: a replica whose replication lag is above this, or unknown, is
    /// not read from. Default: unset (lag is not checked).
    pub fn max_read_lag(&self) -> Result<Option<Duration>, Error> {
        let key = "stargate.maxReadLag";
        self.raw(key).map(|v| parse_duration(v).ok_or_else(|| invalid(key, v, DURATION))).transpose()
    }

    /// `stargate.readYourWrites`: after a push through a `stargate::` URL, reads through it
    /// go to a replica only once it has applied that push (git-remote-stargate(1)).
    /// Default: true.
    pub fn read_your_writes(&self) -> Result<bool, Error> {
        self.boolean("stargate.readYourWrites", true)
    }

    /// `stargate.readYourWrites.timeout`: how long a read waits for a replica to apply this
    /// clone's last push before it reads from the leader instead. Default: 1s (a replica
    /// told of a write applies it within tens of milliseconds; one a second behind is
    /// stalled, and the leader answers sooner).
    pub fn read_your_writes_timeout(&self) -> Result<Duration, Error> {
        self.duration("stargate.readYourWrites.timeout", Duration::from_secs(1))
    }

    /// `stargate.probeTimeout`: how long `git-remote-stargate` waits for each node's health
    /// responder when it looks for the leader (connect, request and answer). Default: 500ms.
    pub fn probe_timeout(&self) -> Result<Duration, Error> {
        let key = "stargate.probeTimeout";
        let d = self.duration(key, Duration::from_millis(500))?;
        if d.is_zero() {
            return Err(invalid(key, self.raw(key).unwrap_or(""), "must be more than 0"));
        }
        Ok(d)
    }

    /// `stargate.healthPort`: the port of the health responder on a name that is not a
    /// configured node id. Default: 8080.
    pub fn health_port(&self) -> Result<u16, Error> {
        let key = "stargate.healthPort";
        match self.raw(key) {
            None => Ok(8080),
            Some(v) => match v.trim().parse::<u16>() {
                Ok(port) if port > 0 => Ok(port),
                _ => Err(invalid(key, v, "expected a port number, 1 to 65535")),
            },
        }
    }

    /// The leader record file a client may read (`stargate.lock` names a file on a volume
    /// this machine mounts), or `None`.
    pub fn leader_lock(&self) -> Result<Option<PathBuf>, Error> {
        match self.lock() {
            Ok(LockSpec::File(p)) => Ok(Some(p)),
            Ok(LockSpec::Etcd { .. }) | Err(Error::Missing(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `remote.<name>.url`, as git reads it.
    pub fn remote_url(&self, name: &str) -> Option<&str> {
        self.raw(&format!("remote.{name}.url"))
    }

    /// `core.sshCommand`, as git reads it for ssh transports.
    pub fn ssh_command(&self) -> Option<&str> {
        self.raw("core.sshCommand")
    }

    /// `ssh.variant`, as git reads it: `ssh` (OpenSSH), `simple`, `plink`, `putty`,
    /// `tortoiseplink`, or `auto` (unset).
    pub fn ssh_variant(&self) -> Option<&str> {
        self.raw("ssh.variant")
    }

    /// `protocol.version`, as git reads it (0, 1 or 2). Default: 2.
    pub fn protocol_version(&self) -> u8 {
        match self.raw("protocol.version").map(str::trim) {
            Some("0") => 0,
            Some("1") => 1,
            _ => 2,
        }
    }
}

/// `stargate.transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Ssh,
    Git,
    File,
    Https,
}

/// `stargate.readFrom`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    Leader,
    Replica,
    Any,
}
