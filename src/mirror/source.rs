//! The node a mirroring reads from (the leader, or a peer for a node about to lead): one
//! protocol v2 session on every transport (`wire::proto`, objects asked for by id with
//! this node's values as haves), else, with a server that does not speak v2, git's own
//! commands: `git ls-remote`, and `git fetch` in a private side repository
//! (`<repo>/stargate/sync.git`) that shares this node's object store but holds only the refs
//! of this fetch, so git neither negotiates with nor checks connectivity against this
//! node's other refs. Reads refs and brings objects; never moves a ref of this node.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use gix::ObjectId;

use super::{Error, Settings, repo_url};
use crate::store::{Edit, Store};
use crate::wire::endpoint::Endpoint;
use crate::wire::git::{self, Bounded};
use crate::wire::proto;

/// Refs by name, as a node listed them.
pub(super) type Refs = HashMap<String, ObjectId>;

/// How this node talks to the other.
enum Link {
    /// One protocol v2 session.
    Session(proto::Session),
    /// `git ls-remote` and `git fetch` (a server without protocol v2).
    Commands,
}

/// Repository `name` at a node, read into this node's copy at `path` by `deadline`.
pub(super) struct Source<'a> {
    path: &'a Path,
    url: String,
    settings: &'a Settings,
    deadline: Instant,
    link: Link,
    /// `.keep` files of packs fetched meanwhile, removed when done (refs point at their
    /// objects by then, or the objects are garbage).
    keeps: Vec<PathBuf>,
    /// Objects a fetch of this session brought whole: present with all they reach.
    complete: HashSet<ObjectId>,
}

impl Drop for Source<'_> {
    fn drop(&mut self) {
        for keep in &self.keeps {
            let _ = std::fs::remove_file(keep);
        }
    }
}

impl<'a> Source<'a> {
    /// Connect to repository `name` under `base_url`: a protocol v2 session where the
    /// transport allows one, else git's commands. A session opens only on a repository
    /// its upload-pack serves.
    pub(super) fn open(
        path: &'a Path,
        name: &str,
        base_url: &str,
        settings: &'a Settings,
        deadline: Instant,
    ) -> Result<Source<'a>, Error> {
        let link = match Endpoint::join(base_url, name) {
            Ok(endpoint) => proto::Session::open(
                &endpoint,
                &proto::Via {
                    upload_pack: settings.upload_pack.as_deref(),
                    local: path,
                    ssh_control: settings.ssh_control.as_deref(),
                },
                settings.connect_timeout,
                deadline,
            )?
            .map_or(Link::Commands, Link::Session),
            Err(_) => Link::Commands,
        };
        Ok(Source {
            path,
            url: repo_url(base_url, name),
            settings,
            deadline,
            link,
            keeps: Vec::new(),
            complete: HashSet::new(),
        })
    }

    /// `open`, for a mirroring into this node's copy: objects are named alike on every node
    /// or not at all, so a node whose copy uses another object format is refused (without
    /// a session, git's own fetch refuses it).
    pub(super) fn open_same_format(
        path: &'a Path,
        name: &str,
        base_url: &str,
        settings: &'a Settings,
        deadline: Instant,
    ) -> Result<Source<'a>, Error> {
        let source = Source::open(path, name, base_url, settings, deadline)?;
        let ours = crate::repos::object_format(path);
        match source.object_format() {
            Some(theirs) if theirs != ours => {
                Err(Error::Format { url: source.url.clone(), theirs: theirs.to_owned(), ours: ours.to_owned() })
            }
            _ => Ok(source),
        }
    }

    /// A protocol v2 session's reads give up once `abandon` says so (`proto::Abandon`);
    /// git's commands run to their deadline.
    pub(super) fn abandon_when(&mut self, abandon: proto::Abandon) {
        if let Link::Session(session) = &mut self.link {
            session.abandon_when(abandon);
        }
    }

    /// The object format the other node's copy uses, when the transport tells.
    pub(super) fn object_format(&self) -> Option<&str> {
        match &self.link {
            Link::Session(s) => Some(s.object_format()),
            Link::Commands => None,
        }
    }

    /// Over git's commands (not a protocol v2 session).
    pub(super) fn is_commands(&self) -> bool {
        matches!(self.link, Link::Commands)
    }

    /// The other node's values of the refs `names` (every ref when empty); absent: no such ref.
    pub(super) fn ls(&mut self, names: &[&str]) -> Result<Refs, Error> {
        match &mut self.link {
            Link::Session(session) => Ok(session.ls_refs(names)?),
            Link::Commands => self.ls_remote(names),
        }
    }

    fn ls_remote(&self, refs: &[&str]) -> Result<Refs, Error> {
        let mut args: Vec<String> = vec!["ls-remote".into()];
        if let Some(prog) = &self.settings.upload_pack {
            args.push(format!("--upload-pack={prog}"));
        }
        args.push(self.url.clone());
        args.extend(refs.iter().map(|r| r.to_string()));
        let out = self.bounded(self.path, &args).show_progress(false).run(self.deadline)?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (oid, name) = l.split_once('\t')?;
                Some((name.to_owned(), ObjectId::from_hex(oid.as_bytes()).ok()?))
            })
            // Patterns match name tails: keep exact names only.
            .filter(|(name, _)| name.starts_with("refs/") && !name.ends_with("^{}"))
            .filter(|(name, _)| refs.is_empty() || refs.contains(&name.as_str()))
            .collect())
    }

    /// Make the objects of `refs` (as listed by `ls`) present in this node's copy, with
    /// `ours` (this node's values of those refs) as what it has. Returns the values
    /// fetched: `refs` itself in a session; by name with git, so newer if a ref moved
    /// meanwhile. `None` when a ref disappeared from the other node in between.
    pub(super) fn fetch(&mut self, main: &Store, refs: &Refs, ours: &Refs) -> Result<Option<Refs>, Error> {
        let Link::Session(session) = &mut self.link else { return self.fetch_side(refs, ours) };
        // Each value once: 100k refs often point at far fewer objects.
        let values: HashSet<ObjectId> = refs.values().copied().collect();
        let (mut wants, present): (Vec<ObjectId>, Vec<ObjectId>) =
            values.into_iter().partition(|oid| !main.repo().has_object(oid));
        // Present is not enough: a fetch killed mid-way (watchdog, leader gone) leaves the
        // loose objects it had written, a commit without all of its tree; unless this
        // session fetched it.
        let mut present: Vec<String> =
            present.iter().filter(|oid| !self.complete.contains(*oid)).map(ObjectId::to_string).collect();
        present.sort();
        wants.extend(git::incomplete(self.path, &present).iter().filter_map(|o| ObjectId::from_hex(o.as_bytes()).ok()));
        wants.sort();
        wants.dedup();
        if wants.is_empty() {
            return Ok(Some(refs.clone()));
        }
        let mut haves: Vec<ObjectId> = ours.values().copied().filter(|oid| main.repo().has_object(oid)).collect();
        haves.sort();
        haves.dedup();
        let mut store = git::PackStore::new(self.path, self.settings.progress);
        session.fetch(&wants, &haves, self.settings.progress, &mut |data| store.write(data))?;
        if let Some(keep) = store.finish(self.deadline, |pack| main.unpack(pack).map(drop))? {
            self.keeps.push(keep);
        }
        if let Some(missing) = wants.iter().find(|oid| !main.repo().has_object(*oid)) {
            return Err(Error::Incomplete(*missing));
        }
        // A pack holds what its wants reach but its haves, which this node's refs hold.
        self.complete.extend(wants);
        Ok(Some(refs.clone()))
    }

    /// Every ref of the other node into this node's copy with `git fetch --prune
    /// --atomic`, but this node's own refs, the leader's staging anchors and the journal
    /// (whose position the caller sets). Over git's commands, or a full mirror of few refs.
    pub(super) fn fetch_all_but_journal(&self) -> Result<(), Error> {
        let args = self.fetch_args(vec![
            "--prune".into(),
            "--atomic".into(),
            self.url.clone(),
            "+refs/*:refs/*".into(),
            format!("^{}*", crate::journal::LOCAL),
            format!("^{}*", crate::journal::stage::STAGING),
            format!("^{}", crate::journal::REF),
        ]);
        self.bounded(self.path, &args).run(self.deadline)?;
        Ok(())
    }

    /// `<repo>/stargate/sync.git`, emptied of refs: a scratch repository over this node's
    /// objects, owned by whoever holds the sync lock.
    fn side_repo(&self) -> Result<PathBuf, Error> {
        let side = self.path.join("stargate/sync.git");
        let io = |what: &'static str| move |source| Error::Io { what: what.into(), source };
        let format = crate::repos::object_format(self.path);
        if side.join("HEAD").is_file() && crate::repos::object_format(&side) != format {
            std::fs::remove_dir_all(&side).map_err(io("cannot remove the side repository"))?;
        }
        if !side.join("HEAD").is_file() {
            git::init_bare_files(&side, format)?;
        }
        let _ = std::fs::remove_file(side.join("packed-refs"));
        let refs = side.join("refs");
        let _ = std::fs::remove_dir_all(&refs);
        std::fs::create_dir_all(refs.join("heads")).map_err(io("cannot empty the side repository"))?;
        std::fs::create_dir_all(refs.join("tags")).map_err(io("cannot empty the side repository"))?;
        Ok(side)
    }

    fn fetch_args(&self, mut args: Vec<String>) -> Vec<String> {
        let mut all: Vec<String> = [
            "fetch",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-auto-gc",
            "--no-auto-maintenance",
            "--no-show-forced-updates",
        ]
        .map(String::from)
        .to_vec();
        all.push(if self.settings.progress { "--progress" } else { "--quiet" }.into());
        if let Some(prog) = &self.settings.upload_pack {
            all.push(format!("--upload-pack={prog}"));
        }
        all.append(&mut args);
        all
    }

    fn bounded(&self, dir: &Path, args: &[String]) -> Bounded {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Bounded::new(dir, &args)
            .env(crate::lead::node::SYNC_TOKEN_ENV, &self.settings.token)
            .show_progress(self.settings.progress)
    }

    /// `fetch` with git: the refs by name into the side repository, seeded with our values
    /// as haves; the objects land in this node's store.
    fn fetch_side(&self, refs: &Refs, ours: &Refs) -> Result<Option<Refs>, Error> {
        if refs.is_empty() {
            return Ok(Some(Refs::new()));
        }
        let side = self.side_repo()?;
        let scratch = Store::open(&side)?;
        let known: Vec<Edit> = (ours.iter())
            .filter(|(name, _)| refs.contains_key(*name))
            .map(|(name, oid)| Edit::set(name, *oid))
            .collect();
        scratch.edit(&known)?;
        let refspecs: Vec<String> = refs.keys().map(|r| format!("+{r}:{r}")).collect();
        let args = self.fetch_args(vec!["--stdin".into(), self.url.clone()]);
        let result = self
            .bounded(&side, &args)
            .env("GIT_OBJECT_DIRECTORY", self.path.join("objects"))
            .stdin(refspecs.join("\n").into_bytes())
            .run(self.deadline);
        match result {
            Ok(_) => {}
            Err(e) if e.text().contains("couldn't find remote ref") => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        // Read afresh: git wrote them behind gix's back.
        let scratch = Store::open(&side)?;
        Ok(Some(scratch.find_many(refs.keys().map(String::as_str))?))
    }
}
