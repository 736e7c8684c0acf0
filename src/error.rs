//! How a failure ends a process: the one place that maps errors to exit codes.
//!
//! Codes follow git: 0 ok, 1 refusal, 9 not leader, 128 fatal, 129 usage.

use std::process::ExitCode;

pub const OK: u8 = 0;
pub const REFUSED: u8 = 1;
pub const NOT_LEADER: u8 = 9;
pub const FATAL: u8 = 128;
pub const USAGE: u8 = 129;

/// Every error a Stargate program can end with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    #[error(transparent)]
    Git(#[from] crate::git::Error),
    #[error(transparent)]
    Lease(#[from] crate::lease::Error),
    #[error(transparent)]
    Kv(#[from] crate::kv::Error),
    #[error(transparent)]
    Remote(#[from] crate::remote::Error),
    /// The node is not the current leader; the message is the contract of SPEC §3.
    #[error("not leader (leader: {leader}, epoch: {epoch})")]
    NotLeader { leader: String, epoch: u64 },
    /// A request that was understood and declined (exit 1).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Fatal(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::NotLeader { .. } => NOT_LEADER,
            Error::Kv(crate::kv::Error::NotLeader(_)) => NOT_LEADER,
            Error::Kv(crate::kv::Error::NotFound(_) | crate::kv::Error::Conflict { .. }) => REFUSED,
            Error::Kv(crate::kv::Error::InvalidKey(..) | crate::kv::Error::InvalidNamespace(..)) => USAGE,
            Error::Refused(_) => REFUSED,
            Error::Usage(_) => USAGE,
            _ => FATAL,
        }
    }
}

/// Print `err` the way git does for its class and return the exit code.
pub fn report(program: &str, err: &Error) -> ExitCode {
    let code = err.exit_code();
    match code {
        NOT_LEADER => eprintln!("stargate: {err}"),
        REFUSED => eprintln!("{program}: {err}"),
        USAGE => eprintln!("error: {err}"),
        _ => eprintln!("fatal: {err}"),
    }
    ExitCode::from(code)
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
