//! Catch-up on election: a node that has just taken the lock mirrors every repository once
//! more from the previous leader, while that leader's repositories can still be read and
//! before this node accepts a write, so that a crash of the leader's agent alone, or a
//! planned handover, loses nothing the previous leader acknowledged. Bounded by
//! `stargate.catchup.timeout`; what it could not fetch is returned.

use std::time::{Duration, Instant};

use super::Agent;
use super::control::Reply;
use crate::lead::lease::Record;
use crate::replication::sync::{self, Target};

/// How often a catch-up that waits for a running sync of the same repository looks again.
const LOCKED_RETRY: Duration = Duration::from_millis(5);

impl Agent {
    /// Quorum mode, before leading: an entry a quorum acknowledged is on `needed` nodes, so
    /// any `nodes - needed + 1` of them, this one counted, include one that holds it. Ask
    /// every peer, and take over, per repository, what the furthest node (this one
    /// included) holds beyond this node's journal; when too few answer, the reason not to
    /// lead. The first leader of all (no `previous`) has nothing to find. In quorum mode this
    /// is the catch-up: the previous leader is one of the nodes asked.
    pub(super) fn adopt_staged(
        &mut self,
        previous: Option<&Record>,
        mine: &Record,
        reply: &mut Reply,
    ) -> Result<(), String> {
        use crate::replication::stage::{self, Position};
        let Some(plan) = self.quorum.clone().filter(|_| previous.is_some()) else { return Ok(()) };
        let must_hear = plan.peers.len() + 2 - plan.needed;
        let created = self.create_what_peers_have(&plan, reply);
        let repos = crate::repos::list(&self.root).unwrap_or_default();
        let timeout = Duration::from_millis(500);
        let mut published = Instant::now();
        for repo in repos.iter().filter(|r| r.readable) {
            let path = self.root.join(&repo.name);
            // One this node never had: what the furthest peer that answers holds (see
            // `create_what_peers_have`).
            let must_hear = if created.contains(&repo.name) { 1 } else { must_hear };
            let own = stage::position(&path);
            let (ours, _) = Position { staged: None, ..own.clone() }.reach();
            let mut best = Some((own.reach(), self.me.clone())).filter(|((at, _), _)| *at > ours);
            // A node counts only with a journal of the repository: one that lost its
            // storage (no repository, or one never mirrored) may have lost the write too.
            let mut heard = usize::from(own.journal.is_some());
            let mut asked = vec![false; plan.peers.len()];
            let deadline = Instant::now() + Duration::from_millis(plan.timeout_ms);
            while heard < must_hear && Instant::now() < deadline && asked.iter().any(|a| !a) {
                for (i, peer) in plan.peers.iter().enumerate() {
                    if asked[i] {
                        continue;
                    }
                    let path = format!("/staged?repo={}", repo.name);
                    let wait = deadline.saturating_duration_since(Instant::now()).min(timeout);
                    let Ok((200, body)) = crate::wire::http::get(&peer.health, &path, Instant::now() + wait, wait)
                    else {
                        continue;
                    };
                    let Ok(p) = serde_json::from_str::<Position>(&body) else { continue };
                    asked[i] = true;
                    if p.journal.is_none() {
                        continue;
                    }
                    heard += 1;
                    let (at, staged) = p.reach();
                    if at > ours && best.as_ref().is_none_or(|((b, _), _)| at > *b) {
                        best = Some(((at, staged), peer.node.clone()));
                    }
                }
                if heard < must_hear {
                    std::thread::sleep(Duration::from_millis(50));
                }
                self.keep_fresh(mine, &mut published);
            }
            if heard < must_hear {
                return Err(format!(
                    "{}: {heard} of the {must_hear} nodes needed hold a journal and answered /staged; an acknowledged write may be on the others",
                    repo.name
                ));
            }
            let Some((((_, seq), staged), node)) = best else { continue };
            let Some(url) = self.node_urls.get(&node).cloned() else {
                return Err(format!("{}: no stargate.{node}.url to fetch what it holds", repo.name));
            };
            let target = Target { leader: node.clone(), epoch: mine.epoch, base_url: url };
            // What it applied comes with a mirror of it; what it holds staged, by adoption.
            let applied = if node == self.me {
                Ok(Default::default())
            } else {
                sync::sync(&path, &repo.name, &target, &self.sync)
            };
            if staged {
                if let Err(e) = &applied {
                    log::warn!("{}: cannot mirror {node}: {e}", repo.name);
                }
                let moved = sync::adopt(&path, &repo.name, &target, &self.sync)
                    .map_err(|e| format!("{}: cannot take over what {node} holds staged: {e}", repo.name))?;
                reply.say(&format!("{}: took over what {node} held staged, to seq {seq} ({moved} refs)", repo.name));
            } else if let Err(e) = applied {
                return Err(format!("{}: cannot mirror {node}, which is further: {e}", repo.name));
            } else {
                reply.say(&format!("{}: caught up with {node} to seq {seq}", repo.name));
            }
            self.keep_fresh(mine, &mut published);
        }
        Ok(())
    }

    /// Keep the heartbeat and the lease (an etcd lease expires) fresh through a long
    /// catch-up or adoption: every `stargate.lease.interval`.
    fn keep_fresh(&mut self, mine: &Record, published: &mut Instant) {
        if published.elapsed() >= self.interval {
            self.publish();
            if let Err(e) = self.lease.renew(mine) {
                log::warn!("cannot renew the lease while catching up: {e}");
            }
            *published = Instant::now();
        }
    }

    /// Quorum mode, before leading: a repository `git stargate create` put on a quorum may
    /// be missing here. Create, empty, every one a peer serves (`/repositories`) and this
    /// node lacks, so that the adoption that follows takes over its contents from the
    /// furthest peer that answers. A node without the repository cannot have staged a write
    /// to it, so the peers' word is enough, unless this node lost that repository's
    /// directory alone (docs/ARCHITECTURE.md, Quorum mode).
    fn create_what_peers_have(
        &self,
        plan: &crate::lead::node::Quorum,
        reply: &mut Reply,
    ) -> std::collections::HashSet<String> {
        let timeout = Duration::from_millis(500);
        let ours: std::collections::HashSet<String> =
            crate::repos::list(&self.root).unwrap_or_default().into_iter().map(|r| r.name).collect();
        let mut created = std::collections::HashSet::new();
        for peer in &plan.peers {
            let Ok((200, body)) =
                crate::wire::http::get(&peer.health, "/repositories", Instant::now() + timeout, timeout)
            else {
                continue;
            };
            for name in body.lines().map(str::trim).filter(|n| crate::repos::valid_name(n)) {
                if ours.contains(name) || created.contains(name) || self.root.join(name).exists() {
                    continue;
                }
                // The node's default object format: the peers' `/repositories` does not say.
                match crate::repos::create_empty(&self.root, name, None, || ours.iter().cloned().collect()) {
                    Ok(()) => {
                        reply.say(&format!("{name}: created, as {} has it", peer.node));
                        created.insert(name.to_owned());
                    }
                    Err(e) => log::warn!("{name}: {} has it, this node cannot create it: {e}", peer.node),
                }
            }
        }
        created
    }

    /// Mirror every repository from `previous`, keeping the lease to lead under (`mine`)
    /// alive meanwhile; the repositories it could not, with why.
    pub(super) fn catch_up(&mut self, previous: &Record, mine: &Record, reply: &mut Reply) -> Vec<(String, String)> {
        let started = Instant::now();
        let deadline = started + self.catchup_timeout;
        let repos = crate::repos::list(&self.root).unwrap_or_default();
        let names: Vec<String> = repos.into_iter().filter(|r| r.readable).map(|r| r.name).collect();
        let Some(base_url) = previous.url.clone() else {
            let why = format!("the leader record names no URL for {}", previous.node);
            return names.into_iter().map(|n| (n, why.clone())).collect();
        };
        // A machine that is gone (powered off, cut off) answers nothing: waiting for its git
        // daemon would spend the whole catch-up timeout on nothing. Only for git://, whose
        // connection goes straight to that address (ssh and http may go through a jump host
        // or a proxy); a name that does not resolve is left to the catch-up itself.
        if let Some(name) = names.first()
            && let Ok(crate::wire::endpoint::Endpoint::Git { host, port, .. }) =
                crate::wire::endpoint::Endpoint::join(&base_url, name)
            && let Err(e) = crate::wire::proto::connect_host(&host, port, Instant::now() + self.catchup_connect_timeout)
            && matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            )
        {
            let why = format!(
                "{}'s Git server {host}:{port} does not answer ({e}, stargate.catchup.connectTimeout {} ms)",
                previous.node,
                self.catchup_connect_timeout.as_millis()
            );
            reply.say(&format!("not catching up: {why}"));
            return names.into_iter().map(|n| (n, why.clone())).collect();
        }
        let target = Target { leader: previous.node.clone(), epoch: previous.epoch, base_url };
        let (mut shortfall, mut changed) = (Vec::new(), 0usize);
        let mut published = Instant::now();
        for name in &names {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    shortfall.push((name.clone(), "catch-up timed out".to_owned()));
                    break;
                }
                let settings = sync::Settings { timeout: left.min(self.sync.timeout), ..self.sync.clone() };
                match sync::sync(&self.root.join(name), name, &target, &settings) {
                    Ok(report) => {
                        if report.refs_changed > 0 {
                            changed += 1;
                            reply.say(&format!(
                                "{name}: caught up to {}'s seq {} ({} refs)",
                                target.leader, report.leader_seq, report.refs_changed
                            ));
                        }
                        break;
                    }
                    // The replica side is syncing it right now: wait, then sync once more.
                    Err(sync::Error::Locked) => std::thread::sleep(LOCKED_RETRY),
                    Err(e) => {
                        shortfall.push((name.clone(), e.to_string()));
                        break;
                    }
                }
            }
            self.keep_fresh(mine, &mut published);
        }
        let took = started.elapsed().as_millis();
        if shortfall.is_empty() {
            reply.say(&format!(
                "caught up with {} (epoch {}): {} repositories, {changed} changed, in {took} ms",
                previous.node,
                previous.epoch,
                names.len()
            ));
        } else {
            for (name, why) in &shortfall {
                reply.say(&format!("{name}: could not catch up with {}: {why}", previous.node));
            }
        }
        shortfall
    }
}
