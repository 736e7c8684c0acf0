//! `git-remote-stargate`, the remote helper behind `stargate::<name>[,<name>…]/<path>`
//! URLs (gitremote-helpers(7)). It answers `capabilities` with `connect` and `option`;
//! on `connect <service>` it finds the node to use (the leader for pushes, as
//! `stargate.readFrom` says for reads), starts the service there and becomes a byte pipe
//! between git and that service. `https://` nodes are handed to git's own
//! `git remote-https`.
//!
//! Failover: a connection that fails before the service has said anything (so before git
//! has sent anything either) is retried once, on the node a fresh look finds; so is one
//! whose leader lost its epoch between the probe and the service's first words. Once bytes
//! have passed, nothing is retried: a push refused with "not leader" shows that message.

mod https;
mod pipe;
pub mod resolve;
mod ryw;
pub mod url;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use crate::config::Config;
use crate::error;
use crate::lead::lease::{Lock, Record};
use resolve::{Op, Policy};
use url::Node;

/// Longest command line accepted from git.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid stargate URL {0}")]
    Url(String),
    #[error("invalid stargate URL {}", .0.0)]
    Endpoint(#[from] crate::wire::endpoint::Error),
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    /// git (or whoever feeds stdin) broke the helper protocol.
    #[error("remote helper protocol: {0}")]
    Protocol(String),
    /// Nobody fit: the message lists what each node answered.
    #[error("{0}")]
    NoLeader(String),
    /// The service could not be started on the node, or said nothing: nothing has passed
    /// yet, so another node may be tried.
    #[error("{node}: cannot reach {url}: {why}")]
    Connect {
        node: String,
        url: String,
        #[source]
        why: Unreached,
    },
    #[error("{node}: {what} {status}")]
    Service { node: String, what: String, status: String },
    /// Talking to git, or to the process that serves it, failed.
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Pipe(#[source] std::io::Error),
    /// A child process started without the pipes it was given (`child`, `git remote-https`).
    #[error("{0} without pipes")]
    NoPipes(&'static str),
    #[error("git remote-https ended early")]
    HelperEnded,
    #[error("not an https node")]
    NotHttps,
    #[error("no attempt made")]
    NoAttempt,
}

/// Why a node's service could not be reached (`Error::Connect`).
#[derive(Debug, thiserror::Error)]
pub enum Unreached {
    #[error("cannot run git: {0}")]
    Git(#[source] std::io::Error),
    #[error("cannot run ssh: {0}")]
    Ssh(#[source] std::io::Error),
    /// A `git://` connection failed: connecting, sending the request, or reading.
    #[error("{0}")]
    Daemon(#[source] std::io::Error),
    #[error("git daemon closed the connection without answering")]
    DaemonClosed,
    #[error("https nodes are served by git remote-https")]
    Https,
    #[error("{what} ended before saying anything ({status})")]
    Silent { what: String, status: String },
    /// The leader found lost its epoch between the probe and the service's first words.
    #[error("the leader changed (epoch {was} → {now})")]
    LeaderChanged { was: u64, now: u64 },
}

impl Error {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// The remote helper's errors are all fatal: printed as they display, their causes kept.
impl From<Error> for error::Error {
    fn from(e: Error) -> Self {
        error::Error::fatal(e)
    }
}

/// The services git asks a `connect` helper for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    UploadPack,
    ReceivePack,
    UploadArchive,
}

impl Service {
    fn parse(s: &str) -> Option<Service> {
        match s {
            "git-upload-pack" => Some(Service::UploadPack),
            "git-receive-pack" => Some(Service::ReceivePack),
            "git-upload-archive" => Some(Service::UploadArchive),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Service::UploadPack => "git-upload-pack",
            Service::ReceivePack => "git-receive-pack",
            Service::UploadArchive => "git-upload-archive",
        }
    }

    fn op(self) -> Op {
        if self == Service::ReceivePack { Op::Write } else { Op::Read }
    }
}

/// What git said with `option` lines.
#[derive(Debug, Clone)]
pub struct Options {
    /// 0 quiet, 1 normal, 2+ verbose (`-v`).
    pub verbosity: u32,
    pub progress: bool,
    /// `--upload-pack` / `--receive-pack`: the program to run instead of the service.
    pub servpath: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options { verbosity: 1, progress: false, servpath: None }
    }
}

/// What the command loop ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A blank line: git is done with us.
    Done,
    Connect(Service),
}

/// Entry point of the `git-remote-stargate` binary.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => ExitCode::from(error::report("git-remote-stargate", &e)),
    }
}

const USAGE: &str = "\
usage: git-remote-stargate <remote> [<url>]

git runs this remote helper for stargate:: URLs; use those with git itself:
   git clone stargate::a,b/srv/kv.git        nodes a and b (stargate.<id>.url, .health)
   git clone stargate::git@vip.example/kv.git one name: a floating address, over stargate.transport
   git push stargate::a,b/kv.git main         pushes always reach the leader

URL forms: stargate::<name>[,<name>...]/<path>, where each <name> is a configured node id
or [user@]host[:port]. See git-remote-stargate(1).";

fn run(args: &[String]) -> error::Result<()> {
    let (alias, url) = match args {
        [_, help] if matches!(help.as_str(), "-h" | "--help" | "help") => {
            println!("{USAGE}");
            return Ok(());
        }
        [_, flag] if matches!(flag.as_str(), "-V" | "--version") => {
            println!("git-remote-stargate {}", crate::version::VERSION);
            return Ok(());
        }
        [_, alias, url] => (alias.as_str(), url.as_str()),
        [_, url] => (url.as_str(), url.as_str()),
        _ => return Err(error::Error::Usage(USAGE.into())),
    };
    let spec = url::parse(url)?;
    let cfg = Config::load(None)?;
    let nodes = url::nodes(&spec, &cfg)?;
    let policy = Policy { read_from: cfg.read_from()?, max_lag: cfg.max_read_lag()?, timeout: cfg.probe_timeout()? };
    let ryw = if cfg.read_your_writes()? { Some(cfg.read_your_writes_timeout()?) } else { None };
    let url = format!("{}/{}", spec.names.join(","), spec.path);
    let session = Session { cfg, nodes, policy, ryw, url, repo: spec.path };
    // Commands are read one byte at a time from a duplicate of fd 0, so that nothing meant
    // for the service is ever buffered here.
    let mut input = stdin_file()?;
    let mut output = stdout_file()?;
    if session.nodes[0].endpoint.is_http() {
        return Ok(https::run(&session, alias, &mut input, &mut output)?);
    }
    let mut options = Options::default();
    match commands(&mut input, &mut output, &mut options)? {
        Next::Done => Ok(()),
        Next::Connect(service) => Ok(session.connect(service, &options)?),
    }
}

fn stdin_file() -> Result<File, Error> {
    let fd = std::io::stdin().as_fd().try_clone_to_owned().map_err(Error::io("stdin"))?;
    Ok(File::from(fd))
}

/// Standard output without std's line buffering: pkt-lines do not end in newlines, and a
/// byte held back here would stall the protocol.
pub(crate) fn stdout_file() -> Result<File, Error> {
    let fd = std::io::stdout().as_fd().try_clone_to_owned().map_err(Error::io("stdout"))?;
    Ok(File::from(fd))
}

pub(crate) struct Session {
    cfg: Config,
    nodes: Vec<Node>,
    policy: Policy,
    /// `stargate.readYourWrites.timeout`, when `stargate.readYourWrites` is on.
    ryw: Option<std::time::Duration>,
    /// The URL without `stargate::`: what positions are kept under.
    url: String,
    /// The repository's name on the nodes.
    repo: String,
}

impl Session {
    /// The leader record, when `stargate.lock` is a file this machine can read.
    fn record(&self) -> Option<Record> {
        let lock = self.cfg.leader_lock().ok().flatten()?;
        Lock::file(lock).read_record().ok().flatten()
    }

    fn resolve(&self, op: Op, options: &Options) -> Result<resolve::Choice, Error> {
        let choice = resolve::resolve(&self.nodes, op, &self.policy, self.record().as_ref())?;
        self.say(op, &choice, options);
        Ok(choice)
    }

    /// With `-v`: the node picked, and why.
    fn say(&self, op: Op, choice: &resolve::Choice, options: &Options) {
        if options.verbosity >= 2 {
            let node = &self.nodes[choice.node];
            let what = if op == Op::Write { "writing to" } else { "reading from" };
            eprintln!(
                "stargate: {what} {} at {} ({}; resolved in {:.1} ms)",
                node.name,
                node.endpoint.display(),
                choice.why,
                choice.elapsed.as_secs_f64() * 1000.0
            );
        }
    }

    /// Resolve, open, and pipe; one retry when the first node failed before anything passed.
    fn connect(&self, service: Service, options: &Options) -> Result<(), Error> {
        let op = service.op();
        let protocol = protocol_for(service, &self.cfg);
        let (memory, known) = self.recall(op);
        let mut failed: Option<(usize, Option<u64>, Error)> = None;
        for _attempt in 0..2 {
            let choice = self.choose(op, options, memory.as_ref(), known)?;
            if let Some((node, epoch, err)) = failed.take()
                && node == choice.node
                && epoch == choice.epoch
            {
                return Err(err);
            }
            let node = &self.nodes[choice.node];
            let opened = match pipe::open(node, service, protocol.as_deref(), options, &self.cfg) {
                Ok(o) => o,
                Err(e) => {
                    if options.verbosity >= 1 {
                        eprintln!("stargate: {e}; nothing was sent, looking for the node again");
                    }
                    failed = Some((choice.node, choice.epoch, e));
                    continue;
                }
            };
            // The service is up, git has sent nothing yet: last chance to notice a handover.
            if let (Op::Write, Some(epoch), Some(record)) = (op, choice.epoch, self.record())
                && record.epoch != epoch
            {
                opened.abandon();
                let e = Error::Connect {
                    node: node.name.clone(),
                    url: node.endpoint.display(),
                    why: Unreached::LeaderChanged { was: epoch, now: record.epoch },
                };
                if options.verbosity >= 1 {
                    eprintln!("stargate: {e}; nothing was sent, looking for the leader again");
                }
                failed = Some((choice.node, Some(record.epoch), e));
                continue;
            }
            opened.run(&node.name)?;
            if let Some(memory) = &memory {
                self.remember(op, choice.node, choice.leader, known, memory, options);
            }
            return Ok(());
        }
        Err(failed.map_or(Error::NoAttempt, |(_, _, e)| e))
    }

    /// Where positions are kept (read-your-writes on), and, for a read, what is kept for
    /// this URL.
    fn recall(&self, op: Op) -> (Option<ryw::Memory>, Option<ryw::Known>) {
        let memory = self.ryw.map(|_| ryw::Memory::here());
        let known = memory.as_ref().filter(|_| op == Op::Read).and_then(|m| m.recall(&self.url));
        (memory, known)
    }

    /// The node for `op`: as `resolve` finds it, then, for a read that found a replica
    /// after a push through this URL, as `for_your_writes` says.
    fn choose(
        &self,
        op: Op,
        options: &Options,
        memory: Option<&ryw::Memory>,
        known: Option<ryw::Known>,
    ) -> Result<resolve::Choice, Error> {
        let mut choice = resolve::resolve(&self.nodes, op, &self.policy, self.record().as_ref())?;
        if let (Some(known), Some(memory)) = (known, memory)
            && !choice.leader
        {
            choice = self.for_your_writes(choice, known, memory)?;
        }
        self.say(op, &choice, options);
        Ok(choice)
    }

    /// A read `choice` found a replica, and this clone pushed through this URL: that
    /// replica if it has applied the push (waiting for it up to the timeout), else the leader.
    fn for_your_writes(
        &self,
        choice: resolve::Choice,
        known: ryw::Known,
        memory: &ryw::Memory,
    ) -> Result<resolve::Choice, Error> {
        let node = &self.nodes[choice.node];
        let verdict = match (known, &node.health) {
            (ryw::Known::Unknown, _) => ryw::Verdict::Leader("the position of the last push is not known".into()),
            (_, None) => ryw::Verdict::Leader(format!("no stargate.{}.health to ask", node.name)),
            (ryw::Known::At(p), Some(addr)) => {
                ryw::wait_for(addr, &self.repo, &p, self.ryw.unwrap_or_default(), self.policy.timeout)
            }
        };
        let superseded = matches!(verdict, ryw::Verdict::Superseded(_));
        let why = match verdict {
            ryw::Verdict::Applied(waited) => {
                let why = format!(
                    "{}; it has applied this clone's last push (waited {:.1} ms)",
                    choice.why,
                    waited.as_secs_f64() * 1000.0
                );
                return Ok(resolve::Choice { why, ..choice });
            }
            ryw::Verdict::Leader(why) => why,
            ryw::Verdict::Superseded(why) => {
                memory.keep(&self.url, None);
                format!("it will never apply this clone's last push ({why}): lost in a failover")
            }
        };
        let leader_only = Policy { read_from: crate::config::ReadFrom::Leader, ..self.policy };
        let leader = resolve::resolve(&self.nodes, Op::Read, &leader_only, self.record().as_ref())?;
        // A leader's journal is final for older epochs: if it will never apply the
        // position either, the push was lost, and waiting for it again would be in vain.
        if let (ryw::Known::At(p), false, Some(addr)) = (known, superseded, &self.nodes[leader.node].health)
            && ryw::wait_for(addr, &self.repo, &p, std::time::Duration::ZERO, self.policy.timeout).is_superseded()
        {
            memory.keep(&self.url, None);
        }
        let why = format!("{}; not {}: {why}", leader.why, node.name);
        Ok(resolve::Choice { why, ..leader })
    }

    /// After a push: the position of the node pushed to, which holds every update of the
    /// push (unknown when that node cannot say). After a read from the leader while the
    /// position was unknown: the leader's, which holds whatever of the push survived.
    fn remember(
        &self,
        op: Op,
        node: usize,
        leader: bool,
        known: Option<ryw::Known>,
        memory: &ryw::Memory,
        options: &Options,
    ) {
        if op == Op::Read && !(known == Some(ryw::Known::Unknown) && leader) {
            return;
        }
        let node = &self.nodes[node];
        let learnt = match &node.health {
            Some(addr) => ryw::position_of(addr, &self.repo, self.policy.timeout),
            None => Err(format!("no stargate.{}.health to ask", node.name)),
        };
        let known = match learnt {
            Ok(p) => ryw::Known::At(p),
            Err(why) => {
                if options.verbosity >= 1 {
                    eprintln!(
                        "stargate: cannot learn {}'s position ({why}): reads go to the leader until it is known",
                        node.name
                    );
                }
                ryw::Known::Unknown
            }
        };
        for failure in memory.keep(&self.url, Some(known)) {
            if options.verbosity >= 2 {
                eprintln!("stargate: {failure}");
            }
        }
    }
}

/// `GIT_PROTOCOL` for the service, decided as git does for its own transports: from
/// `protocol.version` (git does not pass it to `connect` helpers), version 2 for
/// upload-pack only.
fn protocol_for(service: Service, cfg: &Config) -> Option<String> {
    match cfg.protocol_version() {
        2 if service == Service::UploadPack => Some("version=2".into()),
        1 => Some("version=1".into()),
        _ => None,
    }
}

/// One line from git, without its newline; `None` at a clean end of input. A line cut
/// off by the end of input, an over-long line or one that is not UTF-8 is an error.
pub fn read_line(input: &mut impl Read) -> Result<Option<String>, Error> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match input.read(&mut byte) {
            Ok(0) if line.is_empty() => return Ok(None),
            Ok(0) => return Err(Error::Protocol("input ended in the middle of a line".into())),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() >= MAX_LINE => return Err(Error::Protocol("line too long".into())),
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("reading from git")(e)),
        }
    }
    String::from_utf8(line).map(Some).map_err(|_| Error::Protocol("a line is not UTF-8".into()))
}

/// The command loop, up to `connect` or the blank line that ends the session.
pub fn commands(input: &mut impl Read, output: &mut impl Write, options: &mut Options) -> Result<Next, Error> {
    let io = |e| Error::io("writing to git")(e);
    loop {
        let Some(line) = read_line(input)? else {
            return Err(Error::Protocol("input ended before a command".into()));
        };
        let reply = match line.split_once(' ').unwrap_or((&line, "")) {
            ("", "") => return Ok(Next::Done),
            ("capabilities", "") => "connect\noption\n\n".to_owned(),
            ("option", rest) => option(rest, options) + "\n",
            ("connect", service) => match Service::parse(service) {
                Some(s) => return Ok(Next::Connect(s)),
                None => return Err(Error::Protocol(format!("cannot connect to '{}'", shown(service)))),
            },
            _ => return Err(Error::Protocol(format!("unknown command '{}'", shown(&line)))),
        };
        output.write_all(reply.as_bytes()).map_err(io)?;
        output.flush().map_err(io)?;
    }
}

/// The answer to `option <name> <value>`.
pub fn option(rest: &str, options: &mut Options) -> String {
    let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
    match name {
        "verbosity" => match value.parse() {
            Ok(v) => {
                options.verbosity = v;
                "ok".into()
            }
            Err(_) => "error verbosity must be a number".into(),
        },
        "progress" => match value {
            "true" | "false" => {
                options.progress = value == "true";
                "ok".into()
            }
            _ => "error progress must be true or false".into(),
        },
        "servpath" => match unquote_c_style(value) {
            Some(p) if !p.is_empty() && !p.chars().any(char::is_control) => {
                options.servpath = Some(p);
                "ok".into()
            }
            _ => "error bad servpath".into(),
        },
        _ => "unsupported".into(),
    }
}

/// git's `quote_c_style` undone: a plain word, or `"…"` with backslash escapes.
fn unquote_c_style(s: &str) -> Option<String> {
    let Some(inner) = s.strip_prefix('"') else { return Some(s.to_owned()) };
    let inner = inner.strip_suffix('"')?;
    let mut out = Vec::new();
    let mut bytes = inner.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let c = bytes.next()?;
        out.push(match c {
            b'a' => 7,
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 11,
            b'0'..=b'3' => {
                let (d2, d3) = (bytes.next()?, bytes.next()?);
                let digit = |d: u8| (b'0'..=b'7').contains(&d).then_some(d - b'0');
                (c - b'0') * 64 + digit(d2)? * 8 + digit(d3)?
            }
            other => other,
        });
    }
    String::from_utf8(out).ok()
}

/// Text from the input, made safe and short for an error message.
fn shown(s: &str) -> String {
    let s = crate::wire::sanitize::text(s);
    if s.chars().count() > 80 { s.chars().take(80).collect::<String>() + "…" } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(input: &[u8]) -> (Result<Next, Error>, String, Options) {
        let mut out = Vec::new();
        let mut options = Options::default();
        let result = commands(&mut &input[..], &mut out, &mut options);
        (result, String::from_utf8_lossy(&out).into_owned(), options)
    }

    #[test]
    fn answers_capabilities_and_options_then_connects() {
        let (r, out, opts) = session(
            b"capabilities\noption progress true\noption verbosity 2\noption family ipv4\noption servpath \"/opt/git-upload-pack\"\nconnect git-receive-pack\n",
        );
        assert_eq!(r.unwrap(), Next::Connect(Service::ReceivePack));
        assert_eq!(out, "connect\noption\n\nok\nok\nunsupported\nok\n");
        assert_eq!((opts.verbosity, opts.progress, opts.servpath.as_deref()), (2, true, Some("/opt/git-upload-pack")));
        assert_eq!(session(b"capabilities\n\n").0.unwrap(), Next::Done);
    }

    #[test]
    fn bad_input_is_an_error_never_a_panic() {
        for bad in [
            &b""[..],
            b"capabilities",
            b"capabilities\ncapab",
            b"connect git-daemon\n",
            b"connect\n",
            b"fetch 0000 HEAD\n",
            b"\xff\xfe\n",
            b"option verbosity\n",
        ] {
            let (r, _, _) = session(bad);
            assert!(r.is_err(), "{:?}: {r:?}", String::from_utf8_lossy(bad));
        }
        let long = vec![b'x'; MAX_LINE + 10];
        assert!(session(&long).0.is_err());
        // Random bytes and random words: an answer or an error, never a panic.
        let alphabet = b"capabilities option connect git-upload-pack verbosity 1\n\"\\\x00\xff";
        let mut x = 0x2545F4914F6CDD1Du64;
        for _ in 0..2000 {
            let mut input = Vec::new();
            for _ in 0..(x % 64) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                input.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let _ = session(&input);
        }
    }

    /// A fatal error reaches `error::Error` whole: the same words, exit 128, and the remote
    /// helper's error (with its causes) still there for whoever looks.
    #[test]
    fn a_fatal_error_keeps_its_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no ssh here");
        let e = Error::Connect { node: "a".into(), url: "ssh://a/kv.git".into(), why: Unreached::Ssh(io) };
        let exit = error::Error::from(e);
        assert_eq!(exit.exit_code(), error::FATAL);
        assert_eq!(exit.to_string(), "a: cannot reach ssh://a/kv.git: cannot run ssh: no ssh here");
        let error::Error::Failed(inner) = &exit else { panic!("{exit:?}") };
        let Some(Error::Connect { why: Unreached::Ssh(io), .. }) = inner.downcast_ref::<Error>() else {
            panic!("{inner:?}")
        };
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn c_unquote() {
        assert_eq!(unquote_c_style("plain").as_deref(), Some("plain"));
        assert_eq!(unquote_c_style("\"a\\\"b\\\\c\\tx\\303\\251\"").as_deref(), Some("a\"b\\c\txé"));
        assert_eq!(unquote_c_style("\"open"), None);
        assert_eq!(unquote_c_style("\"bad\\9\""), Some("bad9".into()));
    }
}
