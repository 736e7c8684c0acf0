//! The leader lease and the cluster's shared state, on one of two backends that
//! `stargate.lock` picks (stargate(7), Lease):
//!
//! - a file on a shared volume: an exclusive `flock` on it is the lease, and beside it the
//!   leader record (`<lock>.leader`), whose epoch is the fencing token, the handoff record
//!   and the audit log (`file`);
//! - etcd: the leader key, created only if absent and bound to an etcd lease the agent
//!   keeps alive; its create revision is the epoch. The handoff, the last record and the
//!   audit log are keys beside it (`etcd`).
//!
//! Everything above this module sees one interface: `Lock` for what any process may read
//! or append, `Lease` for what only the agent does (take, keep, seize, release).
//!
//! The agent's `Lock` and `Lease` carry the highest epoch its node has seen (`epoch`): every
//! record and leader key read through them raises it or is refused as older, and every
//! acquisition writes an epoch after it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::epoch::{self, Highest};
use super::etcd;
pub use super::etcd::Watched;
use super::file;
use super::handoff::Handoff;
pub use super::record::{Acquired, Claim, Error, Leading, Record};
use crate::format::{Format, HANDOFF, JsonError, LEADER_RECORD, LEADING};

/// `stargate.lock`: where the lease and the shared state are.
#[derive(Clone)]
pub struct Lock {
    backend: Backend,
    highest: Option<Arc<Highest>>,
}

#[derive(Clone)]
enum Backend {
    File(PathBuf),
    Etcd(Arc<etcd::Client>),
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Lock {
    /// The lock `stargate.lock` names, with this node's etcd settings.
    pub fn from_config(cfg: &crate::config::Config) -> Result<Lock, crate::config::Error> {
        use crate::config::{Error as ConfigError, LockSpec};
        match cfg.lock()? {
            LockSpec::File(path) => Ok(Lock { backend: Backend::File(path), highest: None }),
            LockSpec::Etcd { endpoints, key, tls } => {
                let read = |key: &'static str, path: Option<PathBuf>| -> Result<Option<Vec<u8>>, ConfigError> {
                    path.map(|path| {
                        std::fs::read(&path).map_err(|source| ConfigError::Unreadable { key, path, source })
                    })
                    .transpose()
                };
                let material = if tls {
                    let ca =
                        read("stargate.etcd.ca", cfg.etcd_ca()?)?.ok_or(ConfigError::Missing("stargate.etcd.ca"))?;
                    let cert = read("stargate.etcd.cert", cfg.etcd_cert()?)?;
                    let key = read("stargate.etcd.key", cfg.etcd_key()?)?;
                    Some(etcd::Tls { ca, cert_and_key: cert.zip(key) })
                } else {
                    None
                };
                let spec = etcd::Spec { endpoints, key, tls };
                let client = etcd::Client::new(spec, cfg.etcd_timeout()?, material.as_ref()).map_err(|e| {
                    ConfigError::Invalid {
                        key: e.key.to_owned(),
                        value: "(PEM file)".into(),
                        why: "not a usable PEM certificate or key",
                    }
                })?;
                Ok(Lock { backend: Backend::Etcd(Arc::new(client)), highest: None })
            }
        }
    }

    /// The file lease at `path`, as `stargate.lock` names it, for a process that only reads
    /// what it holds (the remote helper, on a machine that mounts the shared volume).
    pub fn file(path: PathBuf) -> Lock {
        Lock { backend: Backend::File(path), highest: None }
    }

    /// This lock, checking what it reads against the highest epoch `highest` has seen, and
    /// raising it (the agent's).
    pub fn with_highest(self, highest: Arc<Highest>) -> Lock {
        Lock { highest: Some(highest), ..self }
    }

    /// As `stargate.lock` says it: the path, or `etcd[s]://endpoints/key`.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::File(path) => path.display().to_string(),
            Backend::Etcd(c) => {
                let s = c.spec();
                format!("{}://{}{}", if s.tls { "etcds" } else { "etcd" }, s.endpoints.join(","), s.key)
            }
        }
    }

    pub fn is_etcd(&self) -> bool {
        matches!(self.backend, Backend::Etcd(_))
    }

    /// The current record, or `None` when nobody leads (file: before the first election;
    /// etcd: also while the leader key is absent between two leaders). With the highest
    /// epoch seen: `Error::Behind` for a record older than it.
    pub fn read_record(&self) -> Result<Option<Record>, Error> {
        epoch::read_checked(self.highest.as_deref(), || self.read_record_as_is())
    }

    /// The current record, whatever its epoch: for a forced promotion over a record this
    /// node refuses.
    pub fn read_record_as_is(&self) -> Result<Option<Record>, Error> {
        match &self.backend {
            Backend::File(path) => file::read_record(path),
            Backend::Etcd(c) => etcd_record(c, &c.spec().key),
        }
    }

    /// Whether the leader of `record` has caught up and accepts writes: announced (`announce`)
    /// once it does. Replicas mirror a leader only then, so that what they hold beyond it (a
    /// write a quorum acknowledged, staged on them) is still there when it looks
    /// (docs/ARCHITECTURE.md, Quorum mode). Never announced at all (a version before the
    /// announcement): taken as leading.
    pub fn is_leading(&self, record: &Record) -> Result<bool, Error> {
        Ok(self.last_leading()?.is_none_or(|l| l.epoch == record.epoch && l.node == record.node))
    }

    /// The last epoch announced as leading, and its node: `None` when none ever was.
    pub fn last_leading(&self) -> Result<Option<Leading>, Error> {
        Ok(match &self.backend {
            Backend::File(path) => file::read_leading(path)?,
            Backend::Etcd(c) => match c.get(&format!("{}/leading", c.spec().key))? {
                None => None,
                Some(kv) => Some(from_etcd(LEADING, &format!("{}/leading", c.spec().key), &kv.value)?),
            },
        })
    }

    /// Say that this node, leader of `record`, has caught up and accepts writes. An older
    /// epoch's announcement, written late, only keeps replicas waiting until the newer
    /// leader announces.
    pub fn announce(&self, record: &Record) -> Result<(), Error> {
        let leading = Leading { epoch: record.epoch, node: record.node.clone() };
        match &self.backend {
            Backend::File(path) => file::write_leading(path, &leading),
            Backend::Etcd(c) => {
                let value = to_etcd(LEADING, &leading)?;
                Ok(c.put(&format!("{}/leading", c.spec().key), &value, None)?)
            }
        }
    }

    /// The handoff in progress. Not checked against the highest epoch seen: a leader refuses
    /// one for any epoch but its own, and a contender checks it (`Highest::check_handoff`).
    pub fn read_handoff(&self) -> Result<Option<Handoff>, Error> {
        match &self.backend {
            Backend::File(path) => file::read_handoff(path),
            Backend::Etcd(c) => match c.get(&format!("{}/handoff", c.spec().key))? {
                None => Ok(None),
                Some(kv) => from_etcd(HANDOFF, &format!("{}/handoff", c.spec().key), &kv.value).map(Some),
            },
        }
    }

    pub fn write_handoff(&self, handoff: &Handoff) -> Result<(), Error> {
        match &self.backend {
            Backend::File(path) => file::write_handoff(path, handoff),
            Backend::Etcd(c) => {
                let value = to_etcd(HANDOFF, handoff)?;
                Ok(c.put(&format!("{}/handoff", c.spec().key), &value, None)?)
            }
        }
    }

    /// End the handoff, if it is still the one naming `to`.
    pub fn clear_handoff(&self, to: &str) -> Result<(), Error> {
        match self.read_handoff()? {
            Some(h) if h.to == to => match &self.backend {
                Backend::File(path) => file::remove_handoff(path),
                Backend::Etcd(c) => Ok(c.delete(&format!("{}/handoff", c.spec().key))?),
            },
            _ => Ok(()),
        }
    }

    /// Append one audit line (a JSON object); `sort_key` orders lines kept as etcd keys
    /// (the event's time, then its node).
    pub fn append_audit(&self, line: &[u8], sort_key: &str) -> Result<(), Error> {
        match &self.backend {
            Backend::File(path) => file::append_audit(path, line),
            Backend::Etcd(c) => {
                let key = format!("{}/audit/{sort_key}-{:08x}", c.spec().key, rand::random::<u32>());
                Ok(c.put(&key, line, None)?)
            }
        }
    }

    /// Every audit line, oldest first.
    pub fn read_audit(&self) -> Vec<Vec<u8>> {
        match &self.backend {
            Backend::File(path) => file::read_audit(path),
            Backend::Etcd(c) => c.list(&format!("{}/audit/", c.spec().key)).unwrap_or_default(),
        }
    }

    /// How many etcd members the lock names (each can be watched); 0 for a file.
    pub fn members(&self) -> usize {
        match &self.backend {
            Backend::File(_) => 0,
            Backend::Etcd(c) => c.members(),
        }
    }

    /// etcd: wait up to `within`, on member `member`, for the leader key to be written or
    /// deleted at revision `since` + 1 or later (`None`: after the key as it is now), so
    /// that a standby contends the moment the leader's lease expires or is revoked instead
    /// of at its next read (docs/ARCHITECTURE.md, The etcd lease). Returns what happened and
    /// the revision to go on from. File: `None`, there is nothing to watch.
    pub fn watch_leader(
        &self,
        member: usize,
        since: Option<u64>,
        within: Duration,
    ) -> Option<Result<(Watched, u64), Error>> {
        let Backend::Etcd(c) = &self.backend else { return None };
        let key = &c.spec().key;
        let watched = (|| {
            let since = match since {
                Some(revision) => revision,
                None => c.get_at(key)?.1,
            };
            Ok(match c.watch(member, key, since + 1, within)? {
                Watched::Changed(revision) => (Watched::Changed(revision), revision),
                other => (other, since),
            })
        })();
        Some(watched)
    }

    /// The agent's side of the lease, with this lock's highest epoch seen.
    pub fn open_lease(&self, ttl: Duration) -> Result<Lease, Error> {
        let highest = self.highest.clone();
        Ok(match &self.backend {
            Backend::File(path) => Lease::File(file::Flock::open(path, highest)?),
            Backend::Etcd(c) => {
                Lease::Etcd(EtcdLease { client: Arc::clone(c), ttl, id: None, mine: None, valid_until: None, highest })
            }
        })
    }
}

/// A record kept in etcd at `key`: a newer format is refused as such, naming the key.
fn from_etcd<T: serde::de::DeserializeOwned>(format: Format, key: &str, bytes: &[u8]) -> Result<T, Error> {
    format.from_json(format_args!("etcd key {key}"), bytes).map_err(|e| match e {
        JsonError::Unknown(e) => Error::Format(e),
        JsonError::Json(e) => Error::EtcdDamaged { what: format!("the {} at {key}", format.name), why: e.to_string() },
    })
}

fn to_etcd(format: Format, value: &impl serde::Serialize) -> Result<Vec<u8>, Error> {
    format.to_json(value).map_err(|e| Error::EtcdDamaged { what: format!("the {}", format.name), why: e.to_string() })
}

fn etcd_record(c: &etcd::Client, key: &str) -> Result<Option<Record>, Error> {
    let Some(kv) = c.get(key)? else { return Ok(None) };
    let mut record: Record = from_etcd(LEADER_RECORD, key, &kv.value)?;
    // The live key's create revision is the epoch; `<key>/last` keeps it in the value.
    if kv.create_revision > 0 && key == c.spec().key {
        record.epoch = kv.create_revision;
    }
    Ok(Some(record))
}

/// The agent's hold on the lease.
pub enum Lease {
    File(file::Flock),
    Etcd(EtcdLease),
}

pub struct EtcdLease {
    client: Arc<etcd::Client>,
    ttl: Duration,
    /// The etcd lease this agent keeps alive, once granted.
    id: Option<i64>,
    /// The record this agent created, while it holds the key.
    mine: Option<Record>,
    valid_until: Option<Instant>,
    highest: Option<Arc<Highest>>,
}

/// How long before etcd may expire a lease its holder stops writing: the TTL is counted
/// from a keep-alive's sending, less this margin for scheduling and clock-rate drift
/// (docs/ARCHITECTURE.md, "The etcd lease").
pub fn safety_margin(ttl: Duration) -> Duration {
    ttl / 5
}

impl Lease {
    /// Take the next epoch if nobody leads now. Never blocks longer than one request.
    pub fn try_acquire(&mut self, claim: &Claim) -> Result<Option<Acquired>, Error> {
        match self {
            Lease::File(flock) => flock.try_acquire(claim),
            Lease::Etcd(l) => l.try_acquire(claim),
        }
    }

    /// Take the next epoch although `current`'s holder has not let go (forced promotion).
    /// File: the lock is taken if free, else the record is written without it. etcd: the
    /// holder's etcd lease is revoked, then the key created.
    pub fn seize(&mut self, claim: &Claim, current: &Record) -> Result<Record, Error> {
        match self {
            Lease::File(flock) => flock.seize(claim, current),
            Lease::Etcd(l) => {
                if let Some(kv) = l.client.get(&l.client.spec().key)?
                    && kv.lease != 0
                {
                    l.client.revoke(kv.lease)?;
                }
                l.try_acquire(claim)?
                    .map(|a| a.record)
                    .ok_or_else(|| Error::Etcd(etcd::Error::Refused("another node took the leader key first".into())))
            }
        }
    }

    /// While leading `mine`: renew the hold (etcd: keep the lease alive) and say whether
    /// `mine` is still the record. `Err` when that cannot be known.
    pub fn renew(&mut self, mine: &Record) -> Result<Option<Record>, Error> {
        match self {
            Lease::File(flock) => flock.renew(mine),
            Lease::Etcd(l) => l.renew(mine),
        }
    }

    /// The moment before which a leader may accept writes without renewing (etcd);
    /// `None` when the hold does not expire by time (file: the lock is kept until let go).
    pub fn valid_until(&self) -> Option<Instant> {
        match self {
            Lease::File(_) => None,
            Lease::Etcd(l) => l.valid_until,
        }
    }

    /// Whether this agent holds the lock (file). A leader after a forced promotion may
    /// not yet: `take_late` tries again.
    pub fn holds(&self) -> bool {
        match self {
            Lease::File(flock) => flock.locked(),
            Lease::Etcd(l) => l.mine.is_some(),
        }
    }

    /// A leader without the lock takes it now if it is free.
    pub fn take_late(&mut self) -> Result<bool, Error> {
        match self {
            Lease::File(flock) => flock.take(),
            Lease::Etcd(_) => Ok(true),
        }
    }

    /// Let go: unlock (file), or delete the key if still ours and revoke the lease (etcd).
    pub fn release(&mut self) {
        match self {
            Lease::File(flock) => flock.release(),
            Lease::Etcd(l) => l.release(),
        }
    }

    /// After `seize`, how long the new leader waits before accepting writes: the old
    /// holder's hooks may trust their own last keep-alive until then (etcd). File: none,
    /// the old holder's hooks read the record themselves.
    pub fn seize_wait(&self) -> Duration {
        match self {
            Lease::File(_) => Duration::ZERO,
            Lease::Etcd(l) => l.ttl,
        }
    }
}

impl EtcdLease {
    fn lease(&mut self) -> Result<i64, Error> {
        match self.id {
            Some(id) => Ok(id),
            None => {
                let id = self.client.grant(self.ttl)?;
                self.id = Some(id);
                Ok(id)
            }
        }
    }

    fn try_acquire(&mut self, claim: &Claim) -> Result<Option<Acquired>, Error> {
        let key = self.client.spec().key.clone();
        let (existing, revision) = self.client.get_at(&key)?;
        if existing.is_some() {
            return Ok(None);
        }
        // The key created next gets a later revision: it must be after every epoch seen, or
        // nobody leads (etcd restored from a backup without a revision bump).
        if let Some(highest) = &self.highest {
            highest.check_revision(revision + 1)?;
        }
        // What was seen before the key is created: from then on, this node's own epoch may be.
        let seen = self.highest.as_ref().and_then(|h| h.seen());
        let sent = Instant::now();
        let mut id = self.lease()?;
        // A lease left over from an earlier hold may have expired meanwhile: a new one, at
        // once (a standby woken by the leader key's deletion must not wait another interval).
        if !self.client.keep_alive(id)? {
            self.id = None;
            id = self.lease()?;
        }
        let mut record = claim.record(0);
        let value = to_etcd(LEADER_RECORD, &record)?;
        let revision = match self.client.create(&key, &value, id)? {
            Ok(revision) => revision,
            Err(_) => return Ok(None),
        };
        record.epoch = revision;
        if let Some(highest) = &self.highest
            && let Err(e) = highest.check_created(&record)
        {
            let _ = self.client.delete_if(&key, revision);
            return Err(e);
        }
        self.valid_until = Some(sent + self.ttl - safety_margin(self.ttl));
        let previous = epoch::newer(etcd_record(&self.client, &format!("{key}/last"))?, seen);
        let last = to_etcd(LEADER_RECORD, &record)?;
        self.client.put(&format!("{key}/last"), &last, None)?;
        self.mine = Some(record.clone());
        Ok(Some(Acquired { record, previous }))
    }

    fn renew(&mut self, mine: &Record) -> Result<Option<Record>, Error> {
        let Some(id) = self.id else { return Ok(None) };
        let sent = Instant::now();
        if !self.client.keep_alive(id)? {
            self.id = None;
            self.mine = None;
            self.valid_until = None;
            return etcd_record(&self.client, &self.client.spec().key.clone()).map(|_| None);
        }
        self.valid_until = Some(sent + self.ttl - safety_margin(self.ttl));
        let key = self.client.spec().key.clone();
        let current = epoch::read_checked(self.highest.as_deref(), || etcd_record(&self.client, &key))?;
        match current {
            Some(r) if r.epoch == mine.epoch && r.node == mine.node => Ok(Some(r)),
            _ => {
                self.mine = None;
                Ok(None)
            }
        }
    }

    fn release(&mut self) {
        let key = self.client.spec().key.clone();
        if let Some(mine) = self.mine.take()
            && let Err(e) = self.client.delete_if(&key, mine.epoch)
        {
            log::warn!("cannot delete the leader key: {e}");
        }
        if let Some(id) = self.id.take()
            && let Err(e) = self.client.revoke(id)
        {
            log::warn!("cannot revoke the etcd lease: {e}");
        }
        self.valid_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Error as ConfigError};

    fn etcds(entries: &[(&str, &str)]) -> Result<Lock, ConfigError> {
        let mut all = vec![("stargate.lock".to_owned(), "etcds://127.0.0.1:2379/stargate/leader".to_owned())];
        all.extend(entries.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Lock::from_config(&Config::from_entries(all))
    }

    /// A PEM file for etcd that is missing or unusable is a bad value of the key naming it.
    #[test]
    fn unusable_pem_files_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = etcds(&[("stargate.etcd.ca", missing.to_str().unwrap())]).unwrap_err();
        assert!(matches!(e, ConfigError::Unreadable { key: "stargate.etcd.ca", .. }), "{e:?}");
        let want = format!("bad value '{}' for 'stargate.etcd.ca': no such file (see stargate(7))", missing.display());
        assert_eq!(e.to_string(), want);

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let e = etcds(&[("stargate.etcd.ca", garbage.to_str().unwrap())]).unwrap_err();
        let ConfigError::Invalid { key, value, .. } = &e else { panic!("{e:?}") };
        assert_eq!((key.as_str(), value.as_str()), ("stargate.etcd.ca", "(PEM file)"), "{e}");
    }
}
