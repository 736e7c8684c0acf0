//! The documentation and the install layout stay true to the code: man pages lint clean,
//! every config key is documented, and an installed prefix works.

use crate::support::*;

#[test]
fn man_pages_are_lint_clean() {
    let pages: Vec<_> = std::fs::read_dir(repo_root().join("man")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(pages.len() >= 4, "{pages:?}");
    for page in pages {
        let out = run(std::process::Command::new("mandoc").args(["-Tlint", "-W", "warning"]).arg(&page));
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out);
        assert!(out.status.success() && text.trim().is_empty(), "{}: {text}", page.display());
    }
}

/// The words of a roff page, with font macros and escapes taken out.
fn roff_text(page: &str) -> String {
    let mut text = String::new();
    for line in page.lines() {
        let (macro_name, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.replace('"', "");
        match macro_name {
            // Alternating-font macros join their arguments with no space between.
            ".BI" | ".BR" | ".IR" | ".RB" | ".RI" | ".IB" => text += &rest.split_whitespace().collect::<String>(),
            ".B" | ".I" => text += &rest,
            _ => text += line,
        }
        text.push('\n');
    }
    ["\\fB", "\\fI", "\\fR", "\\fP", "\\&"].iter().fold(text, |t, esc| t.replace(esc, "")).replace("\\-", "-")
}

#[test]
fn every_config_key_is_documented_in_stargate_7() {
    let source = std::fs::read_to_string(repo_root().join("src/config.rs")).unwrap();
    let page = roff_text(&std::fs::read_to_string(repo_root().join("man/stargate.7")).unwrap());
    let keys: Vec<&str> =
        source.lines().filter_map(|l| l.trim().strip_prefix("/// `")?.split_once("`:").map(|(k, _)| k)).collect();
    assert!(keys.len() >= 10, "found only {keys:?}");
    for key in keys {
        assert!(page.contains(key), "{key} is not documented in man/stargate.7");
    }
}

#[test]
fn install_lays_out_a_working_prefix() {
    let prefix = tempfile::tempdir().unwrap();
    let bindir = std::path::Path::new(HOOK).parent().unwrap();
    let script = repo_root().join("contrib/install.sh");
    let home = tempfile::tempdir().unwrap();
    ok(cmd(script.to_str().unwrap(), home.path())
        .args(["--prefix", prefix.path().to_str().unwrap(), "--bindir"])
        .arg(bindir));
    let p = prefix.path();
    for hook in stargate::hook::NAMES {
        let link = std::fs::read_link(p.join("share/stargate/githooks").join(hook)).unwrap();
        assert_eq!(link, p.join("bin/stargate-hook"), "hooks link to the multi-call binary");
    }
    // The minimal set: Stargate's own hooks, nothing else.
    let mut minimal: Vec<String> = std::fs::read_dir(p.join("share/stargate/githooks-minimal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    minimal.sort();
    assert_eq!(minimal, ["pre-receive", "proc-receive", "reference-transaction"]);
    let link = std::fs::read_link(p.join("share/stargate/githooks-minimal/pre-receive")).unwrap();
    assert_eq!(link, p.join("bin/stargate-hook"));
    for page in ["man1/git-stargate.1", "man1/git-kv.1", "man1/stargate-hook.1", "man7/stargate.7"] {
        assert!(p.join("share/man").join(page).is_file(), "{page}");
    }
    // The installed links work as git subcommands with nothing else on PATH but git.
    let path = format!("{}:/usr/bin:/bin", p.join("bin").display());
    let out = run(cmd("git", home.path()).env("PATH", &path).args(["kv", "-h"]));
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Usage: git kv"), "{}", stderr(&out));
    let out = run(cmd("git", home.path())
        .env("PATH", &path)
        .env("MANPATH", p.join("share/man"))
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .args(["stargate", "--help"]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("git-stargate"),
        "git help stargate shows the page: {}",
        stderr(&out)
    );
    // Re-running is harmless.
    ok(cmd(script.to_str().unwrap(), home.path()).args(["--prefix", p.to_str().unwrap(), "--bindir"]).arg(bindir));
}

#[test]
fn every_contrib_entry_has_a_readme_and_is_named_in_the_readmes_tables() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let contrib = std::fs::read_to_string(repo_root().join("contrib/README.md")).unwrap();
    let table = |text: &str| text.lines().filter(|l| l.starts_with('|')).collect::<Vec<_>>().join("\n");
    let (readme, contrib) = (table(&readme), table(&contrib));
    for entry in std::fs::read_dir(repo_root().join("contrib")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name == "README.md" {
            continue;
        }
        let shown = if path.is_dir() {
            assert!(path.join("README.md").is_file(), "contrib/{name}/ has no README.md");
            format!("{name}/")
        } else {
            name
        };
        assert!(contrib.contains(&format!("`{shown}`")), "contrib/README.md's table does not name {shown}");
        assert!(readme.contains(&format!("`contrib/{shown}`")), "README.md's table does not name contrib/{shown}");
    }
}
