//! docs/ARCHITECTURE.md stays true to the source. Its code map names every module under
//! `src/` (and every binary under `bin/`), and nothing that is not there; the `crate::` paths
//! in `src/` follow the layering it states: its list of layers, each folder's "Never
//! imports" line and `lead/`'s "Only this folder imports" line. And an `#[ignore]` in
//! `tests/it/` means one thing: the test needs root. No two modules share a name.
//!
//! How the document names things, so that these tests can read it: a folder of `src/` has a
//! `### ` heading naming it as a backticked path (`` `src/lead/` ``) and names each of its
//! files, backticked, in its section (`` `journal.rs` ``); a file directly under `src/` is
//! named in a heading (`` `src/kv.rs` ``). Anywhere else a file is named by its full path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::support::repo_root;

fn architecture() -> String {
    std::fs::read_to_string(repo_root().join("docs/ARCHITECTURE.md")).unwrap()
}

/// The text of the `## ` section titled `title`, up to the next `## ` heading.
fn section<'a>(doc: &'a str, title: &str) -> &'a str {
    let start = doc.find(&format!("\n## {title}\n")).unwrap_or_else(|| panic!("no section ## {title}")) + 1;
    let end = doc[start + 3..].find("\n## ").map_or(doc.len(), |i| start + 3 + i);
    &doc[start..end]
}

/// The document without its fenced blocks (their backticks would pair with the text's).
fn prose(text: &str) -> String {
    let mut fenced = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out += line;
            out.push('\n');
        }
    }
    out
}

/// Every backticked span of `text` (outside fenced blocks), with whitespace runs made one space.
fn spans(text: &str) -> Vec<String> {
    let text = prose(text);
    text.split('`').skip(1).step_by(2).map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")).collect()
}

/// One `### ` entry of the code map: the backticked names of its heading, and its text.
struct Entry {
    names: Vec<String>,
    body: String,
}

fn entries(map: &str) -> Vec<Entry> {
    map.split("\n### ")
        .skip(1)
        .map(|part| {
            let (heading, body) = part.split_once('\n').unwrap_or((part, ""));
            Entry { names: spans(heading), body: body.to_owned() }
        })
        .collect()
}

impl Entry {
    /// The top-level modules of `src/` this entry is about.
    fn modules(&self) -> Vec<String> {
        self.names.iter().filter_map(|n| module_of(n)).collect()
    }

    /// The entry's text with its lines joined, for sentences that wrap.
    fn sentences(&self) -> String {
        self.body.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The backticked paths listed right after `phrase` ("`a`, `b::c` or `d`"), for every
    /// occurrence of it.
    fn listed_after(&self, phrase: &str) -> Vec<String> {
        let text = self.sentences();
        let mut listed = Vec::new();
        for (at, _) in text.match_indices(phrase) {
            let mut rest = &text[at + phrase.len()..];
            while let Some(after) = rest.strip_prefix('`') {
                let Some((name, tail)) = after.split_once('`') else { break };
                listed.push(name.to_owned());
                let separator =
                    [", or ", ", and ", ", ", " or ", " and ", " nor "].into_iter().find(|s| tail.starts_with(s));
                match separator {
                    Some(s) => rest = &tail[s.len()..],
                    None => break,
                }
            }
        }
        listed
    }
}

/// `src/lead/` or `src/lead/file.rs` -> `lead`; `src/kv.rs` -> `kv`; anything else -> None.
fn module_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("src/")?;
    let first = rest.split('/').next()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!name.is_empty() && name != "lib").then(|| name.to_owned())
}

/// Every file under `dir` (relative to the repository, sorted), with its text.
fn files(dir: &str) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(repo_root(), &repo_root().join(dir), &mut out);
    out.sort();
    out
}

/// Whether `text` (a module's source) defines the item `name`.
fn defines(text: &str, name: &str) -> bool {
    ["fn", "struct", "enum", "trait", "type", "const", "static", "mod"].iter().any(|kw| {
        text.match_indices(&format!("{kw} {name}"))
            .any(|(i, m)| !text[i + m.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_'))
    })
}

/// Whether the module path `path` (`lead::epoch`, `refs::Store::edit`, `cli::main`,
/// `journal::walk`) names something in `src/`: its first two segments, a module and a
/// module or item in it. None when its first segment is no module (`View::authority`).
fn resolves(path: &str, top: &BTreeSet<String>, folder: Option<&str>) -> Option<bool> {
    let parts: Vec<&str> = path.split("::").collect();
    let root = repo_root().join("src");
    let file = format!("{}.rs", parts[0]);
    // A file of the section's folder, or else of the only folder that has one by that name.
    let folders: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|d| d.is_dir() && d.join(&file).is_file())
        .collect();
    let (dir, module, item) = if top.contains(parts[0]) {
        (root.clone(), parts[0], parts[1])
    } else if let Some(folder) = folder.filter(|f| root.join(f).join(&file).is_file()) {
        (root.join(folder), parts[0], parts[1])
    } else if let [only] = &folders[..] {
        (only.clone(), parts[0], parts[1])
    } else {
        return None;
    };
    let (file, subdir) = (dir.join(format!("{module}.rs")), dir.join(module));
    let found = if subdir.is_dir() {
        subdir.join(format!("{item}.rs")).is_file()
            || std::fs::read_to_string(subdir.join("mod.rs")).is_ok_and(|t| defines(&t, item))
    } else {
        std::fs::read_to_string(&file).is_ok_and(|t| defines(&t, item))
    };
    Some(found)
}

#[test]
fn the_code_map_names_every_module_and_only_modules_that_exist() {
    let doc = architecture();
    let map = section(&doc, "Code map");
    let map_entries = entries(map);
    let mut missing = Vec::new();
    let sources: Vec<String> = files("src").into_iter().chain(files("bin")).map(|(p, _)| p).collect();
    assert!(sources.len() > 20, "{sources:?}");
    for path in &sources {
        let (dir, file) = path.rsplit_once('/').unwrap();
        let named = if dir == "src" {
            map_entries.iter().any(|e| e.names.contains(path))
        } else {
            let folder = format!("{dir}/");
            match map_entries.iter().find(|e| e.names.contains(&folder)) {
                Some(e) => spans(&e.body).iter().any(|s| s == file),
                None => {
                    missing.push(format!("{folder} has no ### heading"));
                    continue;
                }
            }
        };
        if !named {
            missing.push(format!("{path} is not named"));
        }
    }
    // What the map names must exist: paths from the repository's root anywhere in the
    // document, a folder's files in its section, and module paths in the code map and the
    // entry points.
    for span in spans(&doc) {
        let plain = !span.contains([' ', '<', '*', '$']);
        let rooted =
            ["src/", "bin/", "tests/", "docs/", "man/", "contrib/", "githooks/"].iter().any(|r| span.starts_with(r));
        if plain && rooted && !repo_root().join(&span).exists() {
            missing.push(format!("`{span}` does not exist"));
        }
    }
    let top: BTreeSet<String> = sources.iter().filter_map(|p| module_of(p)).collect();
    for entry in &map_entries {
        let folder = entry.names.iter().find(|n| n.ends_with('/') && repo_root().join(n).is_dir());
        for span in spans(&entry.body) {
            if let Some(folder) = folder
                && span.ends_with(".rs")
                && !span.contains('/')
                && !repo_root().join(folder).join(&span).is_file()
            {
                missing.push(format!("`{span}` is not a file of {folder}"));
            }
        }
    }
    for (title, text) in [("Code map", map), ("Entry points", section(&doc, "Entry points"))] {
        let owners: Vec<(Option<String>, String)> =
            std::iter::once((None, text.split("\n### ").next().unwrap().to_owned()))
                .chain(entries(text).into_iter().map(|e| {
                    let folder = e.names.iter().find(|n| n.starts_with("src/") && n.ends_with('/'));
                    (folder.map(|f| f["src/".len()..].trim_end_matches('/').to_owned()), e.body)
                }))
                .collect();
        for (folder, body) in owners {
            for span in spans(&body) {
                let is_path = span.contains("::")
                    && span.split("::").all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'));
                if is_path && resolves(&span, &top, folder.as_deref()) == Some(false) {
                    missing.push(format!("`{span}` ({title}) names nothing in src/"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "docs/ARCHITECTURE.md and the source disagree:\n{}", missing.join("\n"));
}

/// A newcomer reading `promote.rs` in a log or a diff knows which one: no two modules of
/// the library share a name (a folder's `mod.rs` is named by its folder).
#[test]
fn no_two_modules_share_a_name() {
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (file, _) in files("src").into_iter().filter(|(f, _)| !f.starts_with("src/bin/") && f != "src/lib.rs") {
        let path = Path::new(&file);
        let name = match path.file_stem().and_then(|s| s.to_str()) {
            Some("mod") => path.parent().and_then(|p| p.file_name()).and_then(|s| s.to_str()),
            stem => stem,
        };
        seen.entry(name.unwrap_or_default().to_owned()).or_default().push(file);
    }
    let twice: Vec<_> = seen.values().filter(|files| files.len() > 1).collect();
    assert!(twice.is_empty(), "modules of the same name: {twice:?}");
}

/// The module paths a source file names through `crate::`, with their line numbers: the
/// first two segments of each (`lead::lease`), grouped imports (`use crate::{a::b, c}`)
/// taken apart. Comments are skipped.
fn crate_paths(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut text = String::new();
    let mut line_of = Vec::new();
    for (n, line) in source.lines().enumerate() {
        let code = if line.trim_start().starts_with("//") { "" } else { line.split(" // ").next().unwrap_or("") };
        text += code;
        text.push('\n');
        line_of.extend(std::iter::repeat_n(n + 1, code.len() + 1));
    }
    let ident = |s: &str| s.chars().all(|c| c.is_alphanumeric() || c == '_') && !s.is_empty();
    let head = |p: &str| p.split("::").map(str::trim).take_while(|s| ident(s)).take(2).collect::<Vec<_>>().join("::");
    for (at, _) in text.match_indices("crate::") {
        if text[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Nested braces: only the top level's first segments matter.
            let (mut depth, mut item, mut items) = (0, String::new(), Vec::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                    _ if depth == 0 => item.push(c),
                    _ => {}
                }
            }
            items.push(item);
            found.extend(items.iter().map(|i| head(i.trim())).filter(|p| !p.is_empty()).map(|p| (line_of[at], p)));
        } else {
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
            found.push((line_of[at], head(&rest[..end])));
        }
    }
    for (at, _) in text.match_indices("super::super") {
        found.push((line_of[at], "super::super".to_owned()));
    }
    found
}

#[test]
fn the_import_reader_sees_every_form_of_crate_path() {
    let source = "use crate::lead::lease::{Lock, Record};\nuse crate::{config::{self, Config}, wire};\n\
                  // crate::ops in a comment\nlet x = crate::clock::now_ms(); // crate::kv\n\
                  pub(crate) fn f() -> $crate::x::Y {}\nuse super::super::agent;\n";
    let paths: Vec<(usize, String)> = crate_paths(source);
    let expect = [(1, "lead::lease"), (2, "config"), (2, "wire"), (4, "clock::now_ms"), (6, "super::super")];
    assert_eq!(paths, expect.map(|(n, p)| (n, p.to_owned())));
}

/// `path` is `rule` or inside it (`lead::lease::Record` in `lead::lease`; `config::x` in `config`).
fn within(path: &str, rule: &str) -> bool {
    path == rule || path.starts_with(&format!("{rule}::"))
}

#[test]
fn imports_follow_the_layering_of_the_code_map() {
    let doc = architecture();
    let map = section(&doc, "Code map");
    // The layers: the code map's first fenced block, one layer a line, top first.
    let block = map.split("```").nth(1).expect("the code map's list of layers");
    let mut layer = BTreeMap::new();
    for (i, line) in block.lines().skip(1).enumerate() {
        for name in line.split([' ', ',']).filter(|n| !n.is_empty() && *n != "bin/") {
            assert!(layer.insert(name.to_owned(), i).is_none(), "{name} is on two layers");
        }
    }
    let sources = files("src");
    let modules: BTreeSet<String> = sources.iter().filter_map(|(p, _)| module_of(p)).collect();
    let listed: BTreeSet<String> = layer.keys().cloned().collect();
    assert_eq!(listed, modules, "the list of layers names every top-level module of src/, and only those");

    let entries = entries(map);
    let never: Vec<(Vec<String>, String)> =
        entries.iter().flat_map(|e| e.listed_after("Never imports ").into_iter().map(|r| (e.modules(), r))).collect();
    let private: Vec<(Vec<String>, String)> = entries
        .iter()
        .flat_map(|e| e.listed_after("Only this folder imports ").into_iter().map(|r| (e.modules(), r)))
        .collect();
    // The checks below must have something to check.
    assert!(never.len() >= 4 && !private.is_empty(), "rules read: never {never:?}, private {private:?}");

    let mut broken = Vec::new();
    for (file, text) in &sources {
        let Some(from) = module_of(file) else { continue };
        for (line, path) in crate_paths(text) {
            let to = path.split("::").next().unwrap().to_owned();
            let mut why = Vec::new();
            if path == "super::super" {
                why.push("a path across folders is written crate::, which this test reads".to_owned());
            } else if to != from {
                match (layer.get(&from), layer.get(&to)) {
                    (Some(a), Some(b)) if a < b => {}
                    (Some(_), Some(_)) => why.push(format!("{to} is not on a layer below {from}")),
                    _ => why.push(format!("{to} is not a module of the list of layers")),
                }
                for (owners, rule) in &never {
                    if owners.contains(&from) && within(&path, rule) {
                        why.push(format!("{from} never imports {rule}"));
                    }
                }
                for (owners, rule) in &private {
                    if !owners.contains(&from) && within(&path, rule) {
                        why.push(format!("only {} imports {rule}", owners.join(", ")));
                    }
                }
            }
            if !why.is_empty() {
                broken.push(format!("{file}:{line}: crate::{path}: {}", why.join("; ")));
            }
        }
    }
    assert!(broken.is_empty(), "imports against docs/ARCHITECTURE.md's code map:\n{}", broken.join("\n"));
}

/// The suite's tiers: `cargo test` runs everything but the tests marked
/// `#[ignore = "needs root: <why>"]`, and the full suite (contrib/test.sh, as root) runs
/// every ignored test too (`--run-ignored all`). So an ignore must mean exactly that: any
/// other would be a test CI runs that the fast tier calls needing root. The one other tier
/// is the long suite's own tests (`#[ignore = "long suite: <why>"]`): their module must be
/// left out of the default profile (.config/nextest.toml's `default-filter`), so that the
/// full suite does not run them, and contrib/lab/long-suite must name it.
#[test]
fn every_ignored_test_is_one_that_needs_root() {
    let mut marked = 0;
    let mut other = Vec::new();
    let nextest = std::fs::read_to_string(repo_root().join(".config/nextest.toml")).unwrap();
    let long_suite = std::fs::read_to_string(repo_root().join("contrib/lab/long-suite")).unwrap();
    for (file, text) in files("tests/it") {
        let module = file.trim_start_matches("tests/it/").trim_end_matches(".rs").replace('/', "::");
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if !line.starts_with("#[ignore") {
                continue;
            }
            let long = line.strip_prefix("#[ignore = \"long suite: ").is_some_and(|why| why.len() > "\"]".len())
                && nextest.contains(&format!("default-filter = \"not test(/^{module}::/)\""))
                && long_suite.contains(&format!(" {module}::"));
            match line.strip_prefix("#[ignore = \"needs root: ") {
                Some(why) if why.len() > "\"]".len() => marked += 1,
                _ if long => {}
                _ => other.push(format!("{file}:{}: {line}", n + 1)),
            }
        }
    }
    assert!(other.is_empty(), "ignored for another reason than needing root:\n{}", other.join("\n"));
    assert!(marked >= 10, "only {marked} tests marked as needing root");
}
