//! Cascading replicas (stargate(7), Cascading replicas): a replica whose
//! `stargate.<id>.upstream` names another node mirrors from that node, while it answers,
//! instead of from the leader: a remote site pulls across a slow link once and serves
//! several local replicas. Only the source of the fetch changes. The sync still follows
//! the leader the leader record names (its epoch fences what it applies, its clock
//! measures the lag, end to end), and the upstream's journal is the leader's, copied: the
//! same walk, the same lost-commit rules, at every level. An upstream that does not answer
//! its `/healthz`, or whose Git server fails a sync, is left for the leader within a
//! probe interval; after a sync that moved refs, a node tells the replicas below it.

use std::time::{Duration, Instant};

use crate::config::{self, Config};

/// How often a replica asks its upstream's `/healthz`, and how long it waits for it.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a replica mirrors from the leader after a sync from its upstream failed.
pub const HOLD: Duration = Duration::from_secs(10);

/// The node this replica mirrors from, when it is not the leader.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub node: String,
    /// Its `stargate.<id>.url`.
    pub base_url: String,
    /// Its health responder, `host:port`: none means it is taken as up until a sync fails.
    health: Option<String>,
}

impl Upstream {
    /// This node's upstream, from `stargate.<me>.upstream`.
    pub fn from_config(cfg: &Config, me: &str) -> Result<Option<Upstream>, config::Error> {
        let Some(node) = cfg.node_upstream(me)? else { return Ok(None) };
        let base_url = cfg.node_url(&node)?.ok_or(config::Error::Missing("stargate.<upstream>.url"))?;
        let health = cfg.node_health(&node)?.and_then(|h| address(&h));
        Ok(Some(Upstream { node, base_url, health }))
    }

    /// Whether its health responder says it is alive (why not, if not).
    pub fn probe(&self) -> Result<(), String> {
        let Some(addr) = &self.health else { return Ok(()) };
        match crate::wire::http::get(addr, "/healthz", Instant::now() + PROBE_TIMEOUT, PROBE_TIMEOUT) {
            Ok((200, _)) => Ok(()),
            Ok((code, body)) => Err(format!("/healthz answered {code} {}", body.lines().next().unwrap_or("").trim())),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The UDP addresses of the agents of the nodes whose upstream is `me`: told after each
/// sync that moved refs, as the leader tells its replicas (`journal::signal`).
pub fn children(cfg: &Config, me: &str) -> Vec<String> {
    (cfg.nodes().into_iter())
        .filter(|id| cfg.node_upstream(id).ok().flatten().as_deref() == Some(me))
        .filter_map(|id| address(&cfg.node_health(&id).ok()??))
        .collect()
}

/// `host:port` of an `http://host:port` health address.
fn address(health: &str) -> Option<String> {
    let rest = health.strip_prefix("http://")?;
    Some(rest.split('/').next().unwrap_or(rest).to_owned())
}

/// Whether to mirror from the upstream now: what the last probe said, and until when a
/// failed sync from it holds this node to the leader.
#[derive(Debug, Default)]
pub struct Standing {
    pub answering: bool,
    pub held_until: Option<Instant>,
}

impl Standing {
    pub fn usable(&self) -> bool {
        self.answering && self.held_until.is_none_or(|t| Instant::now() >= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_the_nodes_below() {
        let cfg = Config::from_entries(
            [
                ("stargate.a.url", "git://a/"),
                ("stargate.b.url", "git://b/"),
                ("stargate.b.health", "http://10.0.0.2:8080"),
                ("stargate.c.url", "git://c/"),
                ("stargate.c.health", "http://10.0.0.3:8080"),
                ("stargate.c.upstream", "b"),
                ("stargate.d.url", "git://d/"),
                ("stargate.d.upstream", "b"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        assert_eq!(children(&cfg, "b"), vec!["10.0.0.3:8080".to_owned()], "d has no address to tell");
        assert!(children(&cfg, "a").is_empty());
        let up = Upstream::from_config(&cfg, "c").unwrap().unwrap();
        assert_eq!(
            (up.node.as_str(), up.base_url.as_str(), up.health.as_deref()),
            ("b", "git://b/", Some("10.0.0.2:8080"))
        );
        assert!(Upstream::from_config(&cfg, "b").unwrap().is_none());
        let held = Standing { answering: true, held_until: Some(Instant::now() + HOLD) };
        assert!(!held.usable() && Standing { answering: true, held_until: None }.usable());
        assert!(!Standing::default().usable());
    }
}
