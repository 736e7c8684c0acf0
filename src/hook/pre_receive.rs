//! `pre-receive`: the first gate of a push. A node that is not the current leader refuses
//! the whole push before any ref moves. Pushes never get the mirroring exemption.

use crate::error::Result;

pub fn pre_receive() -> Result<()> {
    super::read_updates()?;
    super::require_leader(&crate::lead::node::inspect_repo(&super::git_dir()))?;
    Ok(())
}
