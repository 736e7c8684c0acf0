//! Catch-up on election: a node that has just taken the lock mirrors every repository once
//! more from the previous leader, while that leader's repositories can still be read and
//! before this node accepts a write, so that a crash of the leader's agent alone, or a
//! planned handover, loses nothing the previous leader acknowledged. Bounded by
//! `stargate.catchup.timeout`; what it could not fetch is returned.

use std::time::{Duration, Instant};

use super::Agent;
use super::control::Reply;
use crate::lead::audit;
use crate::lead::lease::Record;
use crate::mirror::{self, Target};
use crate::wire::git::ErrorClass;

/// How often a catch-up that waits for a running sync of the same repository looks again.
const LOCKED_RETRY: Duration = Duration::from_millis(5);
/// How often a catch-up that waits for the outcome of a write in flight looks again.
const OUTCOME_RETRY: Duration = Duration::from_millis(20);
/// How long one look for the writes in flight on this node waits before the lease is
/// kept fresh.
const IN_FLIGHT_LOOK: Duration = Duration::from_millis(100);

/// What asking the peers for their positions found: the nodes that hold a journal and
/// answered, and those further than this node, furthest first.
pub(super) struct Heard {
    pub heard: Vec<String>,
    pub further: Vec<((u64, u64), String)>,
}

/// Quorum mode: too few nodes holding a journal of a repository answered to know the
/// furthest position in it (docs/ARCHITECTURE.md, Quorum mode).
#[derive(Debug, thiserror::Error)]
#[error(
    "{name}: {} of the {must_hear} nodes needed answered with a journal ({}){}: a write a quorum \
     acknowledged may be on the others",
    .heard.len(),
    .heard.join(", "),
    unreadable(.unusable)
)]
pub(super) struct Unheard {
    pub name: String,
    pub must_hear: usize,
    /// The nodes that answered, this one first when it holds a journal.
    pub heard: Vec<String>,
    /// Further nodes whose Git server could not be read.
    pub unusable: Vec<String>,
}

fn unreadable(unusable: &[String]) -> String {
    if unusable.is_empty() { String::new() } else { format!("; {} cannot be read", unusable.join(", ")) }
}

/// Why a node caught up for a planned promotion does not lead: its refs could not be
/// compared with the drained leader's, or differ.
#[derive(Debug, thiserror::Error)]
pub(super) enum Mismatch {
    #[error("the leader record names no URL for {node}")]
    NoUrl { node: String },
    #[error("{name}: cannot list {node}'s refs to compare: {source}")]
    Theirs { name: String, node: String, source: Box<mirror::Error> },
    #[error("{name}: cannot list this node's refs: {source}")]
    Ours { name: String, source: crate::journal::Error },
    #[error(
        "{name}: after catching up, this node's refs differ from {node}'s: {} (git stargate verify; git stargate sync --full)",
        .differing.join(", ")
    )]
    Differ {
        name: String,
        node: String,
        /// The first few refs that differ.
        differing: Vec<String>,
    },
}

/// Before leading, the repositories whose open writes could not be settled, and why: in
/// quorum mode a write a quorum acknowledged may be among them, so the node must not lead.
#[derive(Debug, thiserror::Error)]
#[error("{}", settling(.0))]
pub(super) struct Unsettled(pub Vec<(String, mirror::Error)>);

fn settling(unsettled: &[(String, mirror::Error)]) -> String {
    let each = unsettled.iter().map(|(name, e)| format!("{name}: cannot settle its open writes: {e}"));
    each.collect::<Vec<_>>().join("; ")
}

/// How many writes of `epoch` the journal of `path` leaves open.
fn in_flight(path: &std::path::Path, epoch: u64) -> usize {
    let open = crate::journal::open(path).and_then(|git| match crate::journal::tip(&git)? {
        Some((tip, _)) => crate::journal::open_prepares(&git, tip),
        None => Ok(Vec::new()),
    });
    open.map_or(0, |open| open.iter().filter(|(_, e)| e.epoch == epoch).count())
}

impl Agent {
    /// Quorum mode, before leading: a write a quorum acknowledged is on `needed` nodes, so
    /// any `nodes - needed + 1` of them, this one counted, include one that holds it (applied
    /// or staged: a node holds every write at or before its journal position). Ask every
    /// peer, and mirror, per repository, the furthest node (this one included) with the
    /// values it holds staged; `settle` then applies what is still open. When too few
    /// answer, the reason not to lead, unless `accept_loss` (a forced promotion told to),
    /// which takes the furthest of those that did. The first leader of all (no `previous`)
    /// has nothing to find. In quorum mode this is the catch-up: the previous leader is one
    /// of the nodes asked.
    pub(super) fn adopt_staged(
        &mut self,
        previous: Option<&Record>,
        mine: &Record,
        reply: &mut Reply,
        accept_loss: bool,
    ) -> Result<(), Unheard> {
        let Some(plan) = self.settings.quorum.clone().filter(|_| previous.is_some()) else { return Ok(()) };
        let must_hear = plan.peers.len() + 2 - plan.needed;
        let created = self.create_what_peers_have(&plan, reply);
        let repos = crate::repos::list(&self.settings.root).unwrap_or_default();
        let mut published = Instant::now();
        for repo in repos.iter().filter(|r| r.readable) {
            // One this node never had: what the furthest peer that answers holds (see
            // `create_what_peers_have`).
            let must_hear = if created.contains(&repo.name) { 1 } else { must_hear };
            self.take_from_furthest(&plan, &repo.name, must_hear, accept_loss, Some(mine), reply, &mut published)?;
            self.keep_fresh(mine, &mut published);
        }
        Ok(())
    }

    /// Quorum mode, for repository `name`: hear `must_hear` nodes, then mirror the furthest
    /// of them (its staged values with it) as a node about to lead under `mine`. One whose
    /// Git server does not answer (frozen, cut off) is left out and the others asked again:
    /// safe while those heard still make `must_hear`, which the furthest of them then
    /// covers. Without `mine`, only checks that it could (a forced promotion, before it
    /// fences anyone): the furthest answers. Too few, and the reason, unless `accept_loss`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn take_from_furthest(
        &mut self,
        plan: &crate::lead::node::Quorum,
        name: &str,
        must_hear: usize,
        accept_loss: bool,
        mine: Option<&Record>,
        reply: &mut Reply,
        published: &mut Instant,
    ) -> Result<(), Unheard> {
        let path = self.settings.root.join(name);
        let mut unusable: Vec<String> = Vec::new();
        'hear: loop {
            let Heard { heard, further } = self.hear(plan, name, must_hear, &unusable, mine, published);
            if heard.len() < must_hear {
                let why = Unheard { name: name.to_owned(), must_hear, heard, unusable: unusable.clone() };
                if !accept_loss {
                    return Err(why);
                }
                reply.say(&format!("accepting the loss: {why}"));
                log::warn!("accepting the loss: {why}");
            }
            let Some(((_, seq), node)) = further.into_iter().next() else { return Ok(()) };
            let Some(url) = self.settings.node_urls.get(&node).cloned() else {
                log::warn!("{name}: no stargate.{node}.url to fetch what it holds");
                unusable.push(node);
                continue 'hear;
            };
            let target = Target {
                leader: node.clone(),
                epoch: mine.map_or(0, |m| m.epoch),
                base_url: url,
                peer: true,
                via: None,
            };
            // As long as a peer may take to answer a quorum: a loaded Git server is no frozen one.
            let probe =
                mirror::Settings { timeout: Duration::from_millis(plan.timeout_ms), ..self.settings.sync.clone() };
            let mut read = mirror::journal_at(&path, name, &target.base_url, &probe).map(drop);
            if mine.is_some() && read.is_ok() {
                read = self.sync_waiting(&path, name, &target, &self.settings.sync.clone()).map(drop);
            }
            match read {
                Ok(()) if mine.is_some() => {
                    reply.say(&format!("{name}: caught up with {node} to seq {seq}"));
                    return Ok(());
                }
                Ok(()) => return Ok(()),
                Err(e) => {
                    log::warn!("{name}: cannot read {node}, which is further: {e}; asking the others");
                    unusable.push(node);
                }
            }
        }
    }

    /// Quorum mode: ask the peers (but the `unusable` ones) for their position in repository
    /// `name` until `must_hear` nodes holding a journal of it (this one counted) answered,
    /// or the quorum timeout passes. Keeps the lease to lead under (`mine`) fresh meanwhile.
    pub(super) fn hear(
        &mut self,
        plan: &crate::lead::node::Quorum,
        name: &str,
        must_hear: usize,
        unusable: &[String],
        mine: Option<&Record>,
        published: &mut Instant,
    ) -> Heard {
        use crate::journal::stage;
        let timeout = Duration::from_millis(500);
        let own = stage::position(&self.settings.root.join(name));
        let ours = own.reach();
        let mut found = Heard { heard: Vec::new(), further: Vec::new() };
        // A node counts only with a journal of the repository: one that lost its storage
        // (no repository, or one never mirrored) may have lost the write too.
        if own.journal.is_some() {
            found.heard.push(self.settings.me.clone());
        }
        let mut asked: Vec<bool> = plan.peers.iter().map(|p| unusable.contains(&p.node)).collect();
        let deadline = Instant::now() + Duration::from_millis(plan.timeout_ms);
        while found.heard.len() < must_hear && Instant::now() < deadline && asked.iter().any(|a| !a) {
            for (i, peer) in plan.peers.iter().enumerate() {
                if asked[i] {
                    continue;
                }
                let path = format!("/staged?repo={name}");
                let wait = deadline.saturating_duration_since(Instant::now()).min(timeout);
                let Ok((200, body)) = crate::wire::http::get(&peer.health, &path, Instant::now() + wait, wait) else {
                    continue;
                };
                let p = match stage::read_position(&peer.node, &body) {
                    Ok(p) => p,
                    Err(e) => {
                        log::warn!("{e}");
                        continue;
                    }
                };
                asked[i] = true;
                if p.journal.is_none() {
                    continue;
                }
                found.heard.push(peer.node.clone());
                let at = p.reach();
                if at > ours {
                    found.further.push((at, peer.node.clone()));
                }
            }
            if found.heard.len() < must_hear {
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Some(mine) = mine {
                self.keep_fresh(mine, published);
            }
        }
        // Furthest first; among equals, the order they were asked in.
        found.further.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        found
    }

    /// Defence in depth for a planned promotion (docs/ARCHITECTURE.md, No silent loss):
    /// once caught up to the drained leader's final position, this node's refs must be the
    /// leader's, ref for ref, or it does not lead.
    pub(super) fn verify_against(&self, previous: &Record) -> Result<(), Mismatch> {
        let node = || previous.node.clone();
        let base = previous.url.clone().ok_or_else(|| Mismatch::NoUrl { node: node() })?;
        let repos = crate::repos::list(&self.settings.root).unwrap_or_default();
        for repo in repos.iter().filter(|r| r.readable) {
            let (path, name) = (self.settings.root.join(&repo.name), || repo.name.clone());
            let theirs = mirror::remote_refs(&path, &repo.name, &base, &self.settings.sync)
                .map_err(|e| Mismatch::Theirs { name: name(), node: node(), source: Box::new(e) })?;
            let ours = crate::journal::open(&path)
                .and_then(|git| git.prefixed("refs/").map_err(crate::journal::Error::from))
                .map_err(|source| Mismatch::Ours { name: name(), source })?;
            let differing = crate::store::differing(theirs, ours);
            if !differing.is_empty() {
                let differing = differing.into_iter().take(5).collect();
                return Err(Mismatch::Differ { name: name(), node: node(), differing });
            }
        }
        Ok(())
    }

    /// A sync of one repository, waiting its turn while the replica side syncs it.
    fn sync_waiting(
        &self,
        path: &std::path::Path,
        name: &str,
        target: &Target,
        settings: &mirror::Settings,
    ) -> Result<mirror::Report, mirror::Error> {
        loop {
            match mirror::sync(path, name, target, settings) {
                Err(mirror::Error::Locked) => std::thread::sleep(LOCKED_RETRY),
                other => return other,
            }
        }
    }

    /// Before anything moves on the way to leading: wait until the writes this node's own
    /// git processes have in flight end (an earlier agent of this node let them through, and
    /// was killed or restarted). Their hooks journal their outcomes, and their ref locks are
    /// theirs: settling such a write, or removing its locks as a dead writer's, would end it
    /// twice, once here and once by its git, and a client refused by its git would find it
    /// applied (docs/ARCHITECTURE.md, The journal). Up to `stargate.catchup.timeout`, the
    /// lease kept fresh meanwhile; the pids of those still running after it.
    pub(super) fn wait_for_writes_in_flight(&mut self) -> Result<(), Vec<u32>> {
        let deadline = Instant::now() + self.settings.catchup_timeout;
        let mut published = Instant::now();
        let mut said = false;
        loop {
            let look = (Instant::now() + IN_FLIGHT_LOOK).min(deadline);
            let live = crate::lead::inflight::wait(&self.settings.state_dir, look);
            if live.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(live);
            }
            if !said {
                log::info!("waiting for {} write(s) in flight on this node to end (git pids {live:?})", live.len());
                said = true;
            }
            if let Some(mine) = self.record.clone() {
                self.keep_fresh(&mine, &mut published);
            }
        }
    }

    /// Before leading: settle every prepared write the repositories' journals leave open
    /// (`mirror::settle`): taken over where this node holds it staged (quorum mode), dropped
    /// otherwise. What was dropped is audited: the node that prepared it may have
    /// acknowledged it, and keeps it if so (stargate(7), Lost commits).
    /// Fails, naming the repositories, when any could not be settled: in quorum mode a
    /// write a quorum acknowledged may be among them, so the node must not lead.
    pub(super) fn settle_open_writes(&mut self, previous: Option<&Record>) -> Result<(), Unsettled> {
        let repos = crate::repos::list(&self.settings.root).unwrap_or_default();
        let mut dropped = Vec::new();
        let mut unsettled = Vec::new();
        for repo in repos.iter().filter(|r| r.readable) {
            let path = self.settings.root.join(&repo.name);
            let mut published = Instant::now();
            let settled = loop {
                match mirror::settle(
                    &path,
                    self.epoch,
                    &self.settings.me,
                    self.settings.journal_keep,
                    self.settings.quorum.is_some(),
                    self.settings.started_ms,
                ) {
                    // The replica side's last sync of it: wait it out, staying fresh.
                    Err(mirror::Error::Locked) => {
                        std::thread::sleep(LOCKED_RETRY);
                        if let Some(mine) = self.record.clone() {
                            self.keep_fresh(&mine, &mut published);
                        }
                    }
                    other => break other,
                }
            };
            match settled {
                Ok(s) => {
                    for (seq, refs) in &s.taken_over {
                        log::info!("{}: took over the write at seq {seq} ({})", repo.name, refs.join(", "));
                    }
                    for (seq, refs, why) in s.dropped {
                        log::warn!(
                            "{}: dropped the write prepared at seq {seq} ({}): {why}",
                            repo.name,
                            refs.join(", ")
                        );
                        dropped.push(format!("{} seq {seq} {} ({why})", repo.name, refs.join(" ")));
                    }
                }
                Err(e) => {
                    log::error!("{}: cannot settle its open writes: {e}", repo.name);
                    unsettled.push((repo.name.clone(), e));
                }
            }
        }
        if !dropped.is_empty() {
            self.audit(audit::Event {
                previous_epoch: previous.map(|p| p.epoch),
                previous_leader: previous.map(|p| p.node.clone()),
                ..self
                    .event("dropped-writes", format!("prepared, outcome unknown, not applied: {}", dropped.join("; ")))
            });
        }
        if unsettled.is_empty() { Ok(()) } else { Err(Unsettled(unsettled)) }
    }

    /// Keep the heartbeat and the lease (an etcd lease expires) fresh through a long
    /// catch-up or adoption: every `stargate.lease.interval`.
    fn keep_fresh(&mut self, mine: &Record, published: &mut Instant) {
        if published.elapsed() >= self.settings.interval {
            self.publish();
            if let Err(e) = self.lease.renew(mine) {
                log::warn!("cannot renew the lease while catching up: {e}");
            }
            // A forced promotion's handoff keeps the others off the lock meanwhile.
            if let Ok(Some(mut h)) = self.lock.read_handoff()
                && h.to == self.settings.me
                && h.forced
            {
                h.heartbeat_ms = crate::clock::now_ms();
                if let Err(e) = self.lock.write_handoff(&h) {
                    log::warn!("cannot refresh the handoff: {e}");
                }
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
            crate::repos::list(&self.settings.root).unwrap_or_default().into_iter().map(|r| r.name).collect();
        let mut created = std::collections::HashSet::new();
        for peer in &plan.peers {
            let Ok((200, body)) =
                crate::wire::http::get(&peer.health, "/repositories", Instant::now() + timeout, timeout)
            else {
                continue;
            };
            for name in body.lines().map(str::trim).filter(|n| crate::repos::valid_name(n)) {
                if ours.contains(name) || created.contains(name) || self.settings.root.join(name).exists() {
                    continue;
                }
                // The node's default object format: the peers' `/repositories` does not say.
                match crate::managed::create_empty(&self.settings.root, name, None) {
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
        let deadline = started + self.settings.catchup_timeout;
        let repos = crate::repos::list(&self.settings.root).unwrap_or_default();
        let names: Vec<String> = repos.into_iter().filter(|r| r.readable).map(|r| r.name).collect();
        let Some(base_url) = previous.url.clone() else {
            let why = format!("the leader record names no URL for {}", previous.node);
            return names.into_iter().map(|n| (n, why.clone())).collect();
        };
        // A machine that is gone (powered off, cut off) answers nothing: waiting for its Git
        // server would spend the whole catch-up timeout on nothing. One session opened on
        // the first repository, on whatever transport the record's URL names (ssh gets the
        // same connect timeout), tells; an answer that is not "unreachable" (a missing
        // repository, a refused key) is left to the catch-up itself.
        if let Some(name) = names.first()
            && let Err(mirror::Error::Git(e)) = mirror::answers(
                &self.settings.root.join(name),
                name,
                &base_url,
                &self.settings.sync,
                self.settings.catchup_connect_timeout,
            )
            && matches!(e.class(), ErrorClass::Timeout | ErrorClass::Connection)
        {
            let why = format!(
                "{}'s Git server at {base_url} does not answer ({}, stargate.catchup.connectTimeout {} ms)",
                previous.node,
                crate::wire::sanitize::text(e.text().trim()),
                self.settings.catchup_connect_timeout.as_millis()
            );
            reply.say(&format!("not catching up: {why}"));
            return names.into_iter().map(|n| (n, why.clone())).collect();
        }
        let target = Target { leader: previous.node.clone(), epoch: previous.epoch, base_url, peer: false, via: None };
        let (mut shortfall, mut changed) = (Vec::new(), 0usize);
        let mut published = Instant::now();
        for name in &names {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    shortfall.push((name.clone(), "catch-up timed out".to_owned()));
                    break;
                }
                let settings =
                    mirror::Settings { timeout: left.min(self.settings.sync.timeout), ..self.settings.sync.clone() };
                match mirror::sync(&self.settings.root.join(name), name, &target, &settings) {
                    Ok(report) => {
                        if report.refs_changed > 0 {
                            changed += 1;
                            reply.say(&format!(
                                "{name}: caught up to {}'s seq {} ({} refs)",
                                target.leader, report.leader_seq, report.refs_changed
                            ));
                        }
                        // Writes it had prepared and not yet ended: their outcome comes soon.
                        match in_flight(&self.settings.root.join(name), previous.epoch) {
                            0 => break,
                            n if Instant::now() + OUTCOME_RETRY >= deadline => {
                                shortfall.push((name.clone(), format!("{n} writes prepared there had no outcome yet")));
                                break;
                            }
                            _ => std::thread::sleep(OUTCOME_RETRY),
                        }
                    }
                    // The replica side is syncing it right now: wait, then sync once more.
                    Err(mirror::Error::Locked) => std::thread::sleep(LOCKED_RETRY),
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
