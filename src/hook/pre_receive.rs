//! `pre-receive`: the first gate of a push. Anything under `refs/stargate/` is refused on
//! every node (exit 1): it is Stargate's own namespace. Then a node that is not the current
//! leader refuses the whole push before any ref moves (exit 9). Pushes never get the
//! mirroring exemption. A `git kv` change for `refs/for/kv/` on a node whose git would not
//! hand it to `proc-receive` (as its agent published) is refused too (exit 1). Once the
//! repository's own hook agreed, the leader journals the push's commands at once (`push`).

use std::path::Path;

use super::{Repo, chain};
use crate::error::{Error, Result};
use crate::journal;
use crate::kvtree;
use crate::lead::node;

/// `me`: the path git started this hook by.
pub fn run(repo: &Repo, state_dir: Option<&Path>, me: &Path, args: &[String]) -> Result<()> {
    let input = super::read_input()?;
    let text = String::from_utf8_lossy(&input);
    // Those git hands to `proc-receive` (`managed::PROC_RECEIVE_REFS`) are answered there and
    // left as they are; any other spelling is refused here.
    let refused = |r: &String| protected(r) && !(r.starts_with("refs/stargate/") && hands_over(repo, r));
    if let Some(refname) = journal::parse_updates(&text).into_iter().map(|u| u.refname).find(refused) {
        let why = format!(
            "refusing {refname}: refs/stargate/ belongs to Stargate; pushes may not create, change or delete \
             refs there (stargate(7), Protected namespace)"
        );
        return Err(Error::Refused(why));
    }
    let view = node::inspect_state(state_dir);
    // A git kv change git will not hand to `proc-receive` would be stored as a ref: refused
    // here, where the client hears why and writes the older way (git-kv(1), WRITES).
    let kv_changes = view.state.as_ref().and_then(|s| s.kv_changes);
    if kv_changes == Some(false)
        && !crate::repos::hands_over(repo.git_dir(), "refs/for/kv/default")
        && let Some(u) = journal::parse_updates(&text).into_iter().find(|u| u.refname.starts_with(kvtree::FOR_PREFIX))
    {
        return Err(Error::Refused(format!(
            "refusing {}: neither this repository's config nor this node's sets \
             receive.procReceiveRefs=refs/for/kv/, so the leader cannot apply git kv changes (stargate(7), \
             Managed repositories)",
            u.refname
        )));
    }
    let quorum = view.state.as_ref().is_some_and(|s| s.quorum.is_some());
    if let Some(why) = crate::repos::unsupported_in(repo.git_dir(), quorum) {
        return Err(Error::Refused(crate::repos::unsupported_refusal(why)));
    }
    super::require_leader(&view)?;
    chain::run("pre-receive", args, repo, &input)?;
    match state_dir {
        Some(state_dir) => super::push::begin(repo, state_dir, &text, me, &view),
        None => Ok(()),
    }
}

fn hands_over(repo: &Repo, refname: &str) -> bool {
    crate::repos::hands_over(repo.git_dir(), refname)
}

/// Stargate's own refs: the journal and every node's local refs (kept lost commits), in
/// any case: on a case-insensitive filesystem `refs/Stargate/journal` is the journal's file
/// (stargate(7), Protected namespace).
pub fn protected(refname: &str) -> bool {
    let name = refname.to_ascii_lowercase();
    name == "refs/stargate" || name.starts_with("refs/stargate/")
}

#[cfg(test)]
mod tests {
    use super::protected;

    #[test]
    fn every_case_of_refs_stargate_is_protected() {
        for name in [
            "refs/stargate/journal",
            "refs/Stargate/journal",
            "REFS/STARGATE/x",
            "refs/sTaRgAtE",
            "refs/STARGATE/local/lost/1/refs/heads/main",
        ] {
            assert!(protected(name), "{name}");
        }
        for name in ["refs/heads/stargate", "refs/stargates/x", "refs/heads/refs/stargate/x", "refs/kv/default"] {
            assert!(!protected(name), "{name}");
        }
    }
}
