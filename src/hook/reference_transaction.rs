//! `reference-transaction <state>`: at `prepared` every ref of the transaction is locked
//! and a non-zero exit aborts it, so the lease is checked once more here. A leader that
//! lost the lease after `pre-receive` therefore still cannot commit, and nothing but the
//! agent's own mirroring writes on a passive node.

use crate::error::{Error, Result};
use crate::node;

pub fn reference_transaction(args: &[String]) -> Result<()> {
    let state = args.first().ok_or_else(|| Error::Usage("reference-transaction <state>".into()))?;
    super::read_updates()?;
    if state != "prepared" {
        return Ok(());
    }
    if node::find_state_dir(&super::git_dir()).is_some_and(|dir| node::is_agent_sync(&dir)) {
        return Ok(());
    }
    super::require_leader()?;
    Ok(())
}
