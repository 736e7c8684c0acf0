//! How a failure ends a process: the one place that maps errors to exit codes.
//!
//! Codes follow git: 0 ok, 1 refusal, 9 not leader, 128 fatal, 129 usage; 124 for a wait
//! that timed out, as timeout(1). Modules above this
//! one (`lead` and everything that builds on it) say which class their errors are in by
//! converting them into [`Error`], in their own module: a refusal or "not leader" as its
//! words, anything fatal whole ([`Error::fatal`]), its chain of causes kept. This module
//! imports none of them; it converts only from the modules below it (`config`, `wire`),
//! which keep their own error types and never import this one (docs/ARCHITECTURE.md,
//! Errors and exit codes).

pub const OK: u8 = 0;
pub const REFUSED: u8 = 1;
pub const NOT_LEADER: u8 = 9;
/// Waited as long as asked, and what was waited for has not happened (as timeout(1)).
pub const TIMED_OUT: u8 = 124;
pub const FATAL: u8 = 128;
pub const USAGE: u8 = 129;

/// Every error a Stargate program can end with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    #[error(transparent)]
    Git(#[from] crate::wire::git::Error),
    /// This node is not the current leader, in the words of `Error::not_leader` (or of the
    /// remote that refused).
    #[error("{0}")]
    NotLeader(String),
    /// A request that was understood and declined (exit 1).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Usage(String),
    /// Waited as long as asked (exit 124).
    #[error("{0}")]
    TimedOut(String),
    /// A fatal error of a module above this one, whole: printed as it displays, its causes
    /// kept as its `source()` (exit 128).
    #[error(transparent)]
    Failed(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A repository's own hook (chained after Stargate's) failed with this exit status; it
    /// has said why itself, so nothing more is printed.
    #[error("the repository's own hook failed (exit status {0})")]
    ChainedHook(u8),
    /// A repository's own hook was killed by this signal: the hook dies of it too, so that
    /// git says so (`died of signal`) as it would without Stargate.
    #[error("the repository's own hook died of signal {0}")]
    ChainedSignal(i32),
}

impl Error {
    /// The refusal a node that does not lead gives: the contract of githooks' exit 9,
    /// documented in stargate-hook(1).
    pub fn not_leader(leader: &str, epoch: u64) -> Error {
        Error::NotLeader(format!("not leader (leader: {leader}, epoch: {epoch})"))
    }

    /// A fatal error (exit 128) of a module above this one, kept whole.
    pub fn fatal(e: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Failed(Box::new(e))
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Error::NotLeader(_) => NOT_LEADER,
            Error::Refused(_) => REFUSED,
            Error::Usage(_) => USAGE,
            Error::TimedOut(_) => TIMED_OUT,
            Error::ChainedHook(code) => *code,
            Error::ChainedSignal(signal) => u8::try_from(128 + signal).unwrap_or(255),
            _ => FATAL,
        }
    }
}

/// Print `err` the way git does for its class and return the exit status.
pub fn report(program: &str, err: &Error) -> u8 {
    let code = err.exit_code();
    match err {
        Error::ChainedHook(_) => {}
        // SAFETY: the default action of a signal, then that signal to this process; only
        // if it does not end the process does the exit code below stand in for it.
        Error::ChainedSignal(signal) => unsafe {
            libc::signal(*signal, libc::SIG_DFL);
            libc::raise(*signal);
        },
        Error::NotLeader(_) => eprintln!("stargate: {err}"),
        Error::Refused(_) | Error::TimedOut(_) => eprintln!("{program}: {err}"),
        Error::Usage(_) => eprintln!("error: {err}"),
        _ => eprintln!("fatal: {err}"),
    }
    code
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
