//! `proc-receive` in a managed repository: the leader applies `git kv` changes pushed to
//! `refs/for/kv/<namespace>` itself, one namespace at a time, instead of letting writers
//! race for the namespace's ref (git-kv(1), WRITES; docs/ARCHITECTURE.md, `src/kvtree.rs`).
//!
//! git runs it for the refs `receive.procReceiveRefs` names (stargate(7) sets
//! `refs/for/kv/`), after `pre-receive` allowed the push and the pushed objects are in the
//! repository. For each such ref, holding an exclusive lock on the namespace
//! (`<git dir>/stargate/kv-<namespace>.lock`): this node must lead; the pushed commit's
//! change is applied to the namespace's tip now (`kvtree::apply`); the result moves
//! `refs/kv/<namespace>` in one `git update-ref` that runs the hooks, so the write is
//! checked at `prepared`, journaled and replicated like any push. The client hears `ok`
//! with the ref and commit written, or `ng` with the reason. Updates of `refs/stargate/`
//! (handed over too, for `git push --mirror`) are answered `ok` and not applied. Other refs
//! go to the repository's own `proc-receive` (`chain::proc_receive_relay`).

use std::io::{Read, Write};
use std::path::Path;

use gix::ObjectId;

use super::{HookError, Repo, chain};
use crate::error::Result;
use crate::kvtree::{self, FOR_PREFIX, PREFIX};
use crate::lead::node;

/// How often a change is applied again when the namespace moved under it (a direct push by
/// an older `git kv`, which takes no lock) before it is refused.
const TRIES: usize = 20;

pub fn run(repo: &Repo, state_dir: Option<&Path>, args: &[String]) -> Result<()> {
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let version = read_section(&mut input).map_err(HookError::Protocol)?;
    write_pkt(&mut output, b"version=1\n").and_then(|()| flush(&mut output)).map_err(HookError::Protocol)?;
    let commands = read_section(&mut input).map_err(HookError::Protocol)?;
    let under = |c: &Vec<u8>, prefix: &str| {
        String::from_utf8_lossy(c).split_whitespace().nth(2).is_some_and(|r| r.starts_with(prefix))
    };
    let (kept, commands): (Vec<Vec<u8>>, Vec<Vec<u8>>) = commands.into_iter().partition(|c| under(c, KEPT));
    let (ours, others): (Vec<Vec<u8>>, Vec<Vec<u8>>) = commands.into_iter().partition(|c| under(c, FOR_PREFIX));
    let mut results =
        if others.is_empty() { Vec::new() } else { chain::proc_receive_relay(repo, args, &version, &others)? };
    results.extend(left_as_they_are(&kept));
    for command in &ours {
        let text = String::from_utf8_lossy(command);
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [_, new, refname] = fields[..] else { continue };
        results.extend(apply(repo.git_dir(), state_dir, refname, new).into_iter().map(String::into_bytes));
    }
    for line in &mut results {
        line.push(b'\n');
        write_pkt(&mut output, line).map_err(HookError::Protocol)?;
    }
    flush(&mut output).map_err(HookError::Protocol)?;
    Ok(())
}

/// Stargate's own refs, which a managed repository hands to this hook
/// (`managed::PROC_RECEIVE_REFS`) so that a push carrying them, `git push --mirror` of a
/// repository above all (which deletes every ref the source lacks, the journal with them),
/// succeeds without changing them (stargate(7), Protected namespace).
const KEPT: &str = "refs/stargate/";

/// The report lines for the updates of `refs/stargate/` a push carried: each `ok` to git,
/// which then counts it as done, and none applied; the client is told so once.
fn left_as_they_are(kept: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let refs: Vec<String> =
        kept.iter().filter_map(|c| String::from_utf8_lossy(c).split_whitespace().nth(2).map(str::to_owned)).collect();
    if let Some(first) = refs.first() {
        let more = match refs.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        eprintln!(
            "stargate: {first}{more} left as they are: refs/stargate/ belongs to Stargate, and this push's \
             updates there are ignored (stargate(7), Protected namespace)"
        );
    }
    refs.into_iter().map(|r| format!("ok {r}").into_bytes()).collect()
}

/// The report lines for one pushed change: `ok` and its options, or one `ng`.
fn apply(git_dir: &Path, state_dir: Option<&Path>, refname: &str, new: &str) -> Vec<String> {
    let ng = |why: &str| vec![format!("ng {refname} {}", why.replace('\n', " "))];
    let Some(namespace) = refname.strip_prefix(FOR_PREFIX) else { return ng("not a git kv namespace") };
    if let Err(e) = kvtree::validate_namespace(namespace) {
        return ng(&e.to_string());
    }
    let Ok(pushed) = ObjectId::from_hex(new.as_bytes()) else { return ng("not an object id") };
    if pushed.is_null() {
        return ng("refs/for/kv/ takes changes; delete refs/kv/<namespace> instead");
    }
    if let Err(e) = super::require_leader(&node::inspect_state(state_dir)) {
        eprintln!("stargate: {e}");
        return ng(&e.to_string());
    }
    let _lock = match lock(git_dir, namespace) {
        Ok(lock) => lock,
        Err(e) => return ng(&format!("cannot lock the namespace: {e}")),
    };
    let store = match crate::store::Store::open(git_dir) {
        Ok(store) => store,
        Err(e) => return ng(&e.to_string()),
    };
    let target = format!("{PREFIX}{namespace}");
    let mut last = String::new();
    for _ in 0..TRIES {
        let tip = match store.find(&target) {
            Ok(tip) => tip,
            Err(e) => return ng(&e.to_string()),
        };
        let result = match kvtree::apply(&store, tip, pushed) {
            Ok(result) => result,
            Err(kvtree::Error::Mismatch { current, .. }) => {
                return ng(&format!("cas mismatch {}", current.map_or("none".to_owned(), |c| c.to_string())));
            }
            Err(e) => return ng(&e.to_string()),
        };
        let applied = || {
            let old = tip.unwrap_or_else(|| ObjectId::null(result.kind()));
            vec![
                format!("ok {refname}"),
                format!("option refname {target}"),
                format!("option old-oid {old}"),
                format!("option new-oid {result}"),
            ]
        };
        match store.update_as_push(&target, tip, result, &format!("git kv: {refname}")) {
            Ok(()) => return applied(),
            Err(e) => {
                last = e.text();
                match store.find(&target).ok().flatten() {
                    // This change's own commit: applied for it all the same (a new leader
                    // took over its prepared write), so never applied again, nor refused.
                    Some(now) if now == result => return applied(),
                    // Moved meanwhile by a writer that takes no lock: apply again on its tip.
                    now if now != tip => {}
                    _ => break,
                }
            }
        }
    }
    // The hooks' own words (not leader, …) reach the client as they would for a push.
    let mut why = "cannot update the namespace".to_owned();
    for line in last.lines().filter(|l| !l.trim().is_empty()) {
        eprintln!("{line}");
        if let Some(words) = line.trim().strip_prefix("stargate: ") {
            why = words.to_owned();
        }
    }
    ng(&why)
}

/// The namespace's lock, held until dropped: `flock` queues the writers of one namespace
/// in the kernel, so each waits its turn instead of losing a race.
fn lock(git_dir: &Path, namespace: &str) -> std::io::Result<std::fs::File> {
    let dir = git_dir.join("stargate");
    std::fs::create_dir_all(&dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("kv-{namespace}.lock")))?;
    file.lock()?;
    Ok(file)
}

/// pkt-lines up to the next flush packet (gitprotocol-common(5)).
pub fn read_section(input: &mut impl Read) -> std::io::Result<Vec<Vec<u8>>> {
    let mut lines = Vec::new();
    loop {
        let mut len = [0u8; 4];
        input.read_exact(&mut len)?;
        let len = std::str::from_utf8(&len)
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .ok_or_else(|| std::io::Error::other("bad pkt-line length"))?;
        if len == 0 {
            return Ok(lines);
        }
        if len < 4 {
            return Err(std::io::Error::other("bad pkt-line length"));
        }
        let mut data = vec![0u8; len - 4];
        input.read_exact(&mut data)?;
        if data.last() == Some(&b'\n') {
            data.pop();
        }
        lines.push(data);
    }
}

pub fn write_pkt(out: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    write!(out, "{:04x}", data.len() + 4)?;
    out.write_all(data)
}

pub fn flush(out: &mut impl Write) -> std::io::Result<()> {
    out.write_all(b"0000")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkt_lines_round_trip_to_the_flush() {
        let mut buf = Vec::new();
        write_pkt(&mut buf, b"version=1\0push-options\n").unwrap();
        write_pkt(&mut buf, b"x").unwrap();
        flush(&mut buf).unwrap();
        let lines = read_section(&mut &buf[..]).unwrap();
        assert_eq!(lines, vec![b"version=1\0push-options".to_vec(), b"x".to_vec()]);
        assert!(read_section(&mut &b"00"[..]).is_err());
        assert!(read_section(&mut &b"zzzz"[..]).is_err());
        assert!(read_section(&mut &b"0002"[..]).is_err());
    }
}
