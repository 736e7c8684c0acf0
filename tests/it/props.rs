//! Property tests (proptest) of the parsers of untrusted input reachable through the
//! library's API: `stargate::` URLs and node URLs, the remote helper's command loop,
//! config values, journal entries and `reference-transaction` input, ref names and
//! repository names. Thousands of cases each: no panic, no hang, every rejection a clear
//! error. The HTTP request head, pkt-lines, the v2 responses, health answers and UDP hints
//! are tested beside their private parsers (src/ops/health.rs, src/wire/proto.rs,
//! src/wire/http.rs, src/agent/control.rs). A failure proptest finds is kept as a named
//! regression test.

use std::path::Path;
use std::process::Command;

use proptest::prelude::*;
use stargate::config::Config;
use stargate::journal;
use stargate::remote::{self, Next, Options};
use stargate::wire::endpoint::{self, Endpoint};

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig { cases: n, failure_persistence: None, ..ProptestConfig::default() }
}

/// Text fit for a terminal and a log line: no control characters but newline and tab.
fn printable(text: &str) -> bool {
    !text.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
}

/// A path component that could walk out of a directory.
fn escapes(path: &str) -> bool {
    path.starts_with('/') || path.split('/').any(|c| c == ".." || c == ".")
}

proptest! {
    #![proptest_config(cases(4000))]

    /// `stargate::<names>/<path>`: accepted only with valid names (never an ssh option) and a
    /// relative path that cannot walk out; refused with a message naming the URL, safely.
    #[test]
    fn stargate_urls(url in prop_oneof![
        "\\PC{0,60}",
        any::<Vec<u8>>().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "(stargate::)?[-a-z0-9@.:\\[\\],]{0,30}/[-a-z0-9./~_]{0,30}",
    ]) {
        match remote::url::parse(&url) {
            Ok(spec) => {
                prop_assert!(!spec.names.is_empty() && spec.names.len() <= 16);
                for name in &spec.names {
                    prop_assert!(endpoint::valid_name(name));
                    // Never an option to ssh, neither the host nor the user.
                    prop_assert!(!name.starts_with('-') && !name.contains("@-"), "{name:?}");
                    prop_assert!(!name.chars().any(|c| c.is_whitespace() || c.is_control()), "{name:?}");
                }
                prop_assert!(!spec.path.is_empty() && !escapes(&spec.path), "{:?}", spec.path);
                prop_assert!(!spec.path.chars().any(char::is_control));
            }
            Err(e) => {
                let text = e.to_string();
                prop_assert!(text.starts_with("invalid stargate URL"), "{text}");
                prop_assert!(printable(&text), "{text:?}");
            }
        }
    }

    /// `stargate.<id>.url` joined with a repository path: an ssh host is never an option,
    /// a git:// host carries no user, errors are printable.
    #[test]
    fn node_urls(base in prop_oneof![
        "(ssh|git|file|https|http|ftp|SSH)://[-a-z0-9@.:\\[\\]]{0,20}(/[-a-z0-9~._]{0,10}){0,3}",
        "\\PC{0,40}",
    ], path in "[a-z]{1,8}(/[a-z]{1,8})?\\.git") {
        match Endpoint::join(&base, &path) {
            Ok(Endpoint::Ssh { host, path: p, .. }) => {
                prop_assert!(!host.starts_with('-') && !host.is_empty(), "{host:?}");
                prop_assert!(!host.chars().any(|c| c.is_whitespace() || c.is_control()));
                prop_assert!(p.ends_with(&path));
            }
            Ok(Endpoint::Git { host, .. }) => prop_assert!(!host.contains('@') && !host.starts_with('-')),
            Ok(Endpoint::Local(p)) => prop_assert!(p.is_absolute() && p.ends_with(&path)),
            Ok(Endpoint::Http(url)) => prop_assert!(url.starts_with("http")),
            Err(e) => prop_assert!(printable(&e.0), "{:?}", e.0),
        }
    }

    /// The remote helper's command loop (gitremote-helpers(7)) fed anything: a connect, the
    /// end, or a protocol error; every answer it wrote is one of the protocol's.
    #[test]
    fn remote_helper_command_loop(input in prop_oneof![
        any::<Vec<u8>>(),
        prop::collection::vec(prop_oneof![
            Just("capabilities".to_owned()),
            Just(String::new()),
            "option (verbosity|progress|servpath|family|depth) [ -~]{0,20}",
            "connect (git-upload-pack|git-receive-pack|git-upload-archive|[ -~]{0,20})",
            "\\PC{0,30}",
        ], 0..8).prop_map(|lines| lines.join("\n").into_bytes()),
    ]) {
        let mut out = Vec::new();
        let mut options = Options::default();
        match remote::commands(&mut &input[..], &mut out, &mut options) {
            Ok(Next::Done | Next::Connect(_)) => {}
            Err(e) => {
                let text = e.to_string();
                prop_assert!(!text.is_empty() && printable(&text), "{text:?}");
                prop_assert!(text.chars().count() < 200, "{text:?}");
            }
        }
        let out = String::from_utf8(out).map_err(|_| TestCaseError::fail("answer not UTF-8"))?;
        for line in out.lines() {
            let known = ["connect", "option", "", "ok", "unsupported"].contains(&line) || line.starts_with("error ");
            prop_assert!(known, "answered {line:?}");
        }
        if let Some(p) = &options.servpath {
            prop_assert!(!p.is_empty() && !p.chars().any(char::is_control));
        }
    }

    /// Every key the programs read, with any value: accepted, or refused naming the key and
    /// the value; never a panic. `validate` checks them all at start.
    #[test]
    fn config_values(key in prop::sample::select(KEYS), value in prop_oneof![
        "\\PC{0,20}",
        "[0-9]{0,25}(ms|s|m|h|d|)",
        "(etcds?://|/|http://)[ -~]{0,30}",
        any::<Vec<u8>>().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]) {
        let mut entries = vec![
            ("stargate.root".to_owned(), "/srv/git".to_owned()),
            ("stargate.lock".to_owned(), "/srv/shared/stargate.lock".to_owned()),
            ("stargate.node".to_owned(), "a".to_owned()),
        ];
        entries.retain(|(k, _)| k.to_lowercase() != key.to_lowercase());
        let folded = match key.split('.').collect::<Vec<_>>()[..] {
            [s, v] => format!("{}.{}", s.to_lowercase(), v.to_lowercase()),
            [s, sub, v] => format!("{}.{sub}.{}", s.to_lowercase(), v.to_lowercase()),
            _ => key.to_owned(),
        };
        entries.push((folded, value.clone()));
        let cfg = Config::from_entries(entries);
        if let Err(e) = cfg.validate() {
            let text = e.to_string();
            prop_assert!(text.contains(key) || text.contains("stargate.etcd."), "{text} (for {key}={value:?})");
        }
        // The accessors used later agree with validate: a value validate accepted reads.
        let _ = (cfg.read_from(), cfg.transport(), cfg.max_read_lag(), cfg.probe_timeout(), cfg.health_port());
    }

    /// Durations: a whole number and a unit, nothing else.
    #[test]
    fn durations(s in prop_oneof!["\\PC{0,12}", " ?[0-9]{1,22}(ms|s|m|h)? ?"]) {
        if let Some(d) = stargate::config::parse_duration(&s) {
            let t = s.trim();
            let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            prop_assert!(!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()), "{s:?}");
            prop_assert!(["ms", "s", "m", "h"].contains(&&t[digits.len()..]), "{s:?}");
            prop_assert!(d.as_millis() > 0 || digits.bytes().all(|b| b == b'0'));
        }
    }

    /// Repository names (from the disk, from a UDP signal, from an operator): a valid one is
    /// one or two plain components ending in `.git`, and stays inside the root.
    #[test]
    fn repository_names(name in prop_oneof!["\\PC{0,30}", "[-a-z0-9._/]{0,20}\\.git"]) {
        if stargate::repos::valid_name(&name) {
            prop_assert!(!escapes(&name), "{name:?}");
            prop_assert!(name.split('/').count() <= 2 && name.ends_with(".git"));
            prop_assert!(!name.starts_with('-') && !name.contains("/-") && !name.contains("/."));
            let root = Path::new("/srv/git");
            prop_assert!(root.join(&name).starts_with(root));
        }
    }

    /// Ref names met on the wire and in the journal pass the same gate before anything is
    /// written: git's own rules (gix), which never let a name walk out of the repository.
    /// The journal never covers `refs/stargate/local/` nor itself.
    #[test]
    fn ref_names(name in prop_oneof![
        "\\PC{0,40}",
        "refs/(heads|tags|stargate|stargate/local|kv)/[-a-zA-Z0-9./_@{}~^:?*\\[\\\\ ]{0,20}",
    ]) {
        if let Ok(full) = gix::refs::FullName::try_from(name.as_str()) {
            let text = full.as_bstr().to_string();
            prop_assert!(!escapes(&text) && !text.contains("//"), "{text:?}");
            prop_assert!(!text.chars().any(|c| c.is_control() || c == ' ' || c == '\\'), "{text:?}");
            prop_assert!(Path::new("/repo").join(&text).starts_with("/repo"));
        }
        if journal::journaled(&name) {
            prop_assert!(name.starts_with("refs/") && name != journal::REF && !name.starts_with(journal::LOCAL));
        }
        if stargate::kvtree::validate_key(&name).is_ok() {
            prop_assert!(!escapes(&name) && !name.contains("//") && !name.chars().any(char::is_whitespace));
        }
    }

    /// `reference-transaction` input: only lines of two object ids and a ref name count.
    #[test]
    fn transaction_input(input in prop_oneof![
        "\\PC{0,200}",
        prop::collection::vec(("[0-9a-f]{38,41}", "[0-9a-f]{40}", "[ -~]{0,20}"), 0..5)
            .prop_map(|l| l.iter().map(|(a, b, r)| format!("{a} {b} {r}\n")).collect::<String>()),
    ]) {
        let updates = journal::parse_updates(&input);
        prop_assert!(updates.len() <= input.lines().count());
        for u in updates {
            prop_assert!(!u.refname.contains('\n'));
            let line = format!("{} {} {}", u.old, u.new, u.refname);
            prop_assert!(input.contains(&line), "{line:?}");
        }
    }
}

/// Keys with typed accessors that `validate` checks.
const KEYS: &[&str] = &[
    "stargate.node",
    "stargate.lock",
    "stargate.root",
    "stargate.lease.ttl",
    "stargate.lease.interval",
    "stargate.lease.staleAfter",
    "stargate.etcd.timeout",
    "stargate.etcd.ca",
    "stargate.health.timeout",
    "stargate.health.idleExit",
    "stargate.sync.interval",
    "stargate.sync.sweepInterval",
    "stargate.sync.timeout",
    "stargate.retry.attempts",
    "stargate.retry.baseDelay",
    "stargate.retry.multiplier",
    "stargate.retry.maxDelay",
    "stargate.statsd",
    "stargate.metrics.interval",
    "stargate.alert.url",
    "stargate.alert.window",
    "stargate.alert.p50",
    "stargate.alert.p99",
    "stargate.promote.maxLag",
    "stargate.promote.cooldown",
    "stargate.promote.timeout",
    "stargate.promote.drainTimeout",
    "stargate.catchup.timeout",
    "stargate.a.url",
    "stargate.a.health",
    "kv.pushAttempts",
    "kv.timeout",
];

/// A bare repository for the journal properties, one per test process.
fn journal_repo() -> &'static (tempfile::TempDir, std::path::PathBuf) {
    static REPO: std::sync::OnceLock<(tempfile::TempDir, std::path::PathBuf)> = std::sync::OnceLock::new();
    REPO.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.git");
        let out =
            Command::new("git").args(["init", "-q", "--bare"]).arg(&path).env("GIT_CONFIG_NOSYSTEM", "1").output();
        assert!(out.is_ok_and(|o| o.status.success()));
        (dir, path)
    })
}

/// A commit with `message` and no parent, written as a loose object.
fn commit_with(repo: &gix::Repository, message: &[u8]) -> gix::ObjectId {
    let tree = repo.write_object(gix::objs::Tree::empty()).unwrap().detach();
    let who = gix::actor::Signature {
        name: "j".into(),
        email: "j@x".into(),
        time: gix::date::Time { seconds: 1, offset: 0 },
    };
    let commit = gix::objs::Commit {
        tree,
        parents: Default::default(),
        author: who.clone(),
        committer: who,
        encoding: None,
        message: message.into(),
        extra_headers: Vec::new(),
    };
    repo.write_object(&commit).unwrap().detach()
}

proptest! {
    #![proptest_config(cases(1500))]

    /// A journal entry as a (possibly forged) leader wrote it: any commit message reads as an
    /// entry or as "not a journal entry", never a panic.
    #[test]
    fn journal_entries_from_any_message(message in prop_oneof![
        any::<Vec<u8>>(),
        ("stargate journal [0-9]{1,3}\n\n", prop::collection::vec(prop_oneof![
            "(epoch|time) [0-9]{0,21}",
            "node \\PC{0,10}",
            "[0-9]{1,20} [0-9a-f]{40} [0-9a-f]{39,41} [ -~]{0,20}",
            "\\PC{0,30}",
        ], 0..6)).prop_map(|(h, l)| (h + &l.join("\n")).into_bytes()),
    ]) {
        let repo = journal::open(&journal_repo().1).unwrap();
        let id = commit_with(repo.repo(), &message);
        match journal::read(&repo, id) {
            Ok((entry, parent)) => {
                prop_assert!(parent.is_none());
                prop_assert!(message.starts_with(b"stargate journal "));
                for (_, u) in &entry.updates {
                    prop_assert!(!u.refname.contains('\n'));
                }
            }
            Err(e) => {
                let text = e.to_string();
                prop_assert!(text.contains("not a journal entry") || text.starts_with("journal:"), "{text}");
            }
        }
    }

    /// What the leader appends, a replica reads back the same, numbered in order.
    #[test]
    fn journal_round_trip(updates in prop::collection::vec(
        ("[0-9a-f]{40}", "[0-9a-f]{40}", "refs/heads/[a-z0-9/_.-]{1,20}"), 0..6),
        epoch in 1u64..u64::MAX, node in "[a-z][a-z0-9_-]{0,10}") {
        let repo = journal::open(&journal_repo().1).unwrap();
        let updates: Vec<journal::Update> = updates
            .into_iter()
            .map(|(o, n, r)| journal::Update {
                old: gix::ObjectId::from_hex(o.as_bytes()).unwrap(),
                new: gix::ObjectId::from_hex(n.as_bytes()).unwrap(),
                refname: r,
            })
            .collect();
        let before = journal::tip(&repo).unwrap().map_or(0, |(_, s)| s);
        let (_, last) = journal::append(&repo, epoch, &node, journal::Body::Prepare(updates.clone()), journal::DEFAULT_KEEP).unwrap();
        let (id, seq) = journal::tip(&repo).unwrap().unwrap();
        prop_assert_eq!(seq, last);
        let (entry, _) = journal::read(&repo, id).unwrap();
        prop_assert_eq!(entry.epoch, epoch);
        prop_assert_eq!(&entry.node, &node);
        let got: Vec<journal::Update> = entry.updates.iter().map(|(_, u)| u.clone()).collect();
        prop_assert_eq!(got, updates.clone());
        let seqs: Vec<u64> = entry.updates.iter().map(|(s, _)| *s).collect();
        prop_assert_eq!(seqs, (before + 1..=before + updates.len() as u64).collect::<Vec<_>>());
    }
}

proptest! {
    #![proptest_config(cases(250))]

    /// What the remote helper and the sync hand to a remote shell (an ssh path, an
    /// `--upload-pack` program) is quoted as one word that the shell gives back unchanged.
    /// Twenty strings per case, one shell each.
    #[test]
    fn shell_quoting_round_trips(words in prop::collection::vec(
        prop_oneof!["\\PC{0,20}", "[ '!\"$`\\\\;|&*?~#(){}<>\\t-]{0,12}"], 20)) {
        let script = format!("printf '%s\\0' {}", words.iter().map(|w| endpoint::sq_quote(w)).collect::<Vec<_>>().join(" "));
        let out = Command::new("/bin/sh").arg("-c").arg(&script).output().unwrap();
        prop_assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let back: Vec<String> = out.stdout.split(|&b| b == 0).map(|w| String::from_utf8_lossy(w).into_owned()).collect();
        prop_assert_eq!(&back[..words.len()], &words[..]);
    }
}
