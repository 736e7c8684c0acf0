//! Server-side hooks installed through `core.hooksPath` (SPEC §3). Each one decides from
//! this node's view of the lease whether the write may go on.

mod pre_receive;
mod reference_transaction;

pub use pre_receive::pre_receive;
pub use reference_transaction::reference_transaction;

use std::io::Read;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::lead::node::{Authority, View};

/// Drain the hook's stdin: git writes every ref update there and expects it read.
fn read_updates() -> Result<String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| Error::Fatal(format!("cannot read the ref updates: {e}")))?;
    Ok(input)
}

/// Ok when the node serving this repository (hooks run in it) leads the current epoch;
/// otherwise say why on stderr (git relays it to the pushing client) and fail with
/// `NotLeader` (exit 9). Reads no git config: see `node::inspect_repo`.
fn require_leader(view: &View) -> Result<u64> {
    match view.authority() {
        Authority::Leader { epoch } => Ok(epoch),
        Authority::Refused { leader, epoch, reason } => {
            eprintln!("stargate: {reason}");
            Err(Error::not_leader(&leader, epoch))
        }
    }
}

/// The repository a hook runs for: `$GIT_DIR` (git sets it for hooks, and does not always
/// change into it), else the working directory.
fn git_dir() -> PathBuf {
    std::env::var_os("GIT_DIR").map_or_else(|| PathBuf::from("."), PathBuf::from)
}
