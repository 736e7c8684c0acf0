//! The repositories a node serves: the bare repositories under `stargate.root`, named
//! relative to it (`name.git` or `owner/name.git`).

use std::path::Path;

/// One repository found under the root.
#[derive(Debug, Clone)]
pub struct Repo {
    pub name: String,
    pub readable: bool,
}

/// A repository name under `stargate.root`: `name.git` or `owner/name.git`, each part a
/// plain name, so no `..` and no absolute paths.
pub fn valid_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    (1..=2).contains(&parts.len()) && parts.iter().all(|p| crate::config::valid_id(p)) && name.ends_with(".git")
}

/// Bare repositories under `root`, as `name.git` or `owner/name.git` (two levels at most),
/// sorted by name. Directories starting with `.` (such as `.stargate`) are skipped.
pub fn list(root: &Path) -> std::io::Result<Vec<Repo>> {
    let mut found = Vec::new();
    scan(root, root, 2, &mut found)?;
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

fn scan(root: &Path, dir: &Path, depth: u32, found: &mut Vec<Repo>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) || !path.is_dir() {
            continue;
        }
        if path.join("HEAD").is_file() && path.join("objects").is_dir() {
            let name = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
            let readable = std::fs::read(path.join("HEAD")).is_ok() && std::fs::read_dir(path.join("objects")).is_ok();
            found.push(Repo { name, readable });
        } else if depth > 1 {
            scan(root, &path, depth - 1, found)?;
        }
    }
    Ok(())
}
