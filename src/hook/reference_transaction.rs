//! `reference-transaction <state>`: at `prepared` every ref of the transaction is locked
//! and a non-zero exit aborts it, so the lease is checked once more here. A leader that
//! lost the lease after `pre-receive` therefore still cannot commit, and nothing but the
//! agent's own mirroring writes on a passive node.
//!
//! On the leader, `prepared` also appends the transaction to the journal (before any ref
//! moves), and `committed` signals the replicas to sync now instead of at their next poll.

use crate::error::{Error, Result};
use crate::journal;
use crate::node::{self, Role};

pub fn reference_transaction(args: &[String]) -> Result<()> {
    let state = args.first().ok_or_else(|| Error::Usage("reference-transaction <state>".into()))?;
    let input = super::read_updates()?;
    let git_dir = super::git_dir();
    let updates: Vec<_> =
        journal::parse_updates(&input).into_iter().filter(|u| journal::journaled(&u.refname)).collect();
    match state.as_str() {
        "prepared" => {
            if node::find_state_dir(&git_dir).is_some_and(|dir| node::is_agent_sync(&dir)) {
                return Ok(());
            }
            let view = node::inspect_repo(&git_dir);
            let epoch = super::require_leader(&view)?;
            if !updates.is_empty() {
                let repo = journal::open(&git_dir).map_err(|e| Error::Fatal(e.to_string()))?;
                journal::append(&repo, epoch, &view.me, updates).map_err(|e| {
                    eprintln!("stargate: cannot journal this update, refusing it: {e}");
                    Error::Fatal(e.to_string())
                })?;
            }
            Ok(())
        }
        "committed" if !updates.is_empty() => {
            let view = node::inspect_repo(&git_dir);
            if let Some(state) = view.state.as_ref().filter(|s| s.role == Role::Leader) {
                node::signal_peers(state, &git_dir);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}
