//! `pre-receive`: the first gate of a push. A node that is not the current leader refuses
//! the whole push before any ref moves. Pushes never get the mirroring exemption.

use std::path::Path;

use super::{Repo, chain};
use crate::error::Result;
use crate::lead::node;

pub fn run(repo: &Repo, state_dir: Option<&Path>, args: &[String]) -> Result<()> {
    let input = super::read_input()?;
    super::require_leader(&node::inspect_state(state_dir))?;
    chain::run("pre-receive", args, repo, &input)
}
