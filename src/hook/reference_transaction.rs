//! `reference-transaction <state>`: at `prepared` every ref of the transaction is locked
//! and a non-zero exit aborts it, so the lease is checked once more here. A leader that
//! lost the lease after `pre-receive` therefore still cannot commit, and nothing but the
//! agent's own mirroring writes on a passive node.
//!
//! On the leader, `prepared` also appends the transaction to the journal (before any ref
//! moves), and `committed` signals the replicas to sync now instead of at their next poll.
//! Transactions that only move refs between storage forms (`pack-refs`, `gc`) change no
//! value: they are neither checked nor journaled, on any node.

use std::path::Path;

use gix::ObjectId;

use crate::error::{Error, Result};
use crate::journal::{self, Update};
use crate::node::{self, Role};

pub fn reference_transaction(args: &[String]) -> Result<()> {
    let state = args.first().ok_or_else(|| Error::Usage("reference-transaction <state>".into()))?;
    let input = super::read_updates()?;
    let git_dir = super::git_dir();
    let all = journal::parse_updates(&input);
    match state.as_str() {
        "prepared" => {
            // Judged before anything moves: at `committed` every real change looks stored already.
            let changes: Vec<Update> = all.iter().filter(|u| !storage_only(&git_dir, u)).cloned().collect();
            // Lines that are not `<oid> <oid> <ref>` (symbolic refs such as HEAD) are writes too.
            let symbolic = input.lines().filter(|l| !l.trim().is_empty()).count() > all.len();
            if changes.is_empty() && !symbolic {
                return Ok(());
            }
            // The journal records what each ref really held, whatever the caller expected.
            let updates: Vec<Update> = (changes.iter().filter(|u| journal::journaled(&u.refname)))
                .map(|u| Update { old: current_value(&git_dir, &u.refname).unwrap_or(u.old), ..u.clone() })
                .collect();
            if node::find_state_dir(&git_dir).is_some_and(|dir| node::is_agent_sync(&dir)) {
                return Ok(());
            }
            let view = node::inspect_repo(&git_dir);
            let epoch = super::require_leader(&view).inspect_err(|_| {
                for u in &changes {
                    log::warn!("refused: {} {} -> {}", u.refname, u.old, u.new);
                }
            })?;
            if !updates.is_empty() {
                let repo = journal::open(&git_dir).map_err(|e| Error::Fatal(e.to_string()))?;
                journal::append(&repo, epoch, &view.me, updates).map_err(|e| {
                    eprintln!("stargate: cannot journal this update, refusing it: {e}");
                    Error::Fatal(e.to_string())
                })?;
            }
            Ok(())
        }
        // A signal is a hint: one after a gc only costs the replicas an idle sync.
        "committed" if all.iter().any(|u| u.old != u.new && journal::journaled(&u.refname)) => {
            let view = node::inspect_repo(&git_dir);
            if let Some(state) = view.state.as_ref().filter(|s| s.role == Role::Leader) {
                node::signal_peers(state, &git_dir);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// An update that changes how a ref is stored, not its value. Judged against the ref's
/// actual value: `old` in the hook's input is the caller's expectation (all zeros for
/// `update-ref -d` without one), not what the ref holds.
///
/// `pack-refs` first copies loose refs into the packed store (reported as `0000 -> X`
/// while the ref already is X), then prunes each loose copy (`X -> 0000` while
/// `packed-refs` holds the same X and nobody holds `packed-refs.lock`). Any real deletion
/// of a packed ref holds that lock while it is prepared, so it is never taken for a prune.
fn storage_only(git_dir: &Path, u: &Update) -> bool {
    if !u.new.is_null() {
        return current_value(git_dir, &u.refname) == Some(u.new);
    }
    let loose = loose_value(git_dir, &u.refname);
    loose.is_some() && !git_dir.join("packed-refs.lock").exists() && loose == packed_value(git_dir, &u.refname)
}

/// What `refname` holds now: its loose file, else its `packed-refs` line.
pub(crate) fn current_value(git_dir: &Path, refname: &str) -> Option<ObjectId> {
    loose_value(git_dir, refname).or_else(|| packed_value(git_dir, refname))
}

fn loose_value(git_dir: &Path, refname: &str) -> Option<ObjectId> {
    let text = std::fs::read_to_string(git_dir.join(refname)).ok()?;
    ObjectId::from_hex(text.trim().as_bytes()).ok()
}

fn packed_value(git_dir: &Path, refname: &str) -> Option<ObjectId> {
    let packed = std::fs::read_to_string(git_dir.join("packed-refs")).ok()?;
    let hex = packed.lines().find_map(|l| l.strip_suffix(refname)?.strip_suffix(' '))?;
    ObjectId::from_hex(hex.as_bytes()).ok()
}
