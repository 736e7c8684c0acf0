//! The Debian package (contrib/debian/README.md): built with `cargo deb` from the binaries
//! this suite already built, installed with dpkg, upgraded by a newer build, removed and
//! purged, leaving nothing behind but the `git` user (kept, as Debian keeps system users).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::support::*;

/// The machine's programs only: what an operator's shell finds after `apt install`.
const SYSTEM_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

fn system(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args).env_clear().env("PATH", SYSTEM_PATH).env("LC_ALL", "C").env("TZ", "UTC").env("HOME", "/root");
    c
}

/// Runs `c` and returns its stdout, failing with its stderr.
fn must(mut c: Command) -> String {
    let out = run(&mut c);
    assert!(out.status.success(), "{c:?}: {}\n{}{}", out.status, String::from_utf8_lossy(&out.stdout), stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `cargo deb` without building: it packages the dev profile's binaries, which the suite
/// has already built (contrib/test.sh), so the package costs seconds, not a release build.
fn build_deb(out: &Path, revision: &str) -> String {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(repo_root())
        .args(["deb", "--no-build", "--profile", "dev", "--fast", "--deb-revision", revision, "--output"])
        .arg(out);
    let stdout = must(c);
    let deb = stdout.lines().rev().find(|l| l.ends_with(".deb")).map(str::trim).unwrap_or_default();
    assert!(Path::new(deb).is_file(), "cargo deb named no package: {stdout}");
    deb.to_owned()
}

fn installed_version() -> Option<String> {
    let out = run(system("dpkg-query", &["-W", "-f", "${Status} ${Version}", "stargate"]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && text.starts_with("install ok installed"))
        .then(|| text.rsplit(' ').next().unwrap_or("").into())
}

fn user_exists(name: &str) -> bool {
    run(system("getent", &["passwd", name])).status.success()
}

#[test]
#[ignore = "needs root: dpkg installs the package on this machine"]
fn the_package_installs_upgrades_over_itself_and_purges_without_a_trace() {
    require_root("dpkg installs the package on this machine");
    let dir = tempfile::tempdir().unwrap();
    // A run stopped half-way may have left one installed.
    let _ = run(system("dpkg", &["--purge", "stargate"]));
    let git_user_before = user_exists("git");
    let gitconfig = || std::fs::read("/etc/gitconfig").ok();
    let config_before = gitconfig();

    let started = Instant::now();
    let first = build_deb(&dir.path().join("1"), "1");
    let second = build_deb(&dir.path().join("2"), "2");
    eprintln!("two packages built in {:.1} s", started.elapsed().as_secs_f64());

    must(system("dpkg", &["-i", &first]));
    let version = format!("{}-1", env!("CARGO_PKG_VERSION"));
    assert_eq!(installed_version().as_deref(), Some(version.as_str()));

    // The programs, from the machine's PATH, say which build they are.
    for (program, args, name) in [
        ("git", &["stargate", "--version"][..], "git stargate"),
        ("git", &["kv", "--version"][..], "git kv"),
        ("stargate-hook", &["--version"][..], "stargate-hook"),
        ("git-remote-stargate", &["--version"][..], "git-remote-stargate"),
    ] {
        let out = must(system(program, args));
        assert_eq!(out.trim(), format!("{name} {}", stargate::version::VERSION), "{program} {args:?}");
    }
    for link in ["git-stargate", "git-kv"] {
        assert_eq!(
            std::fs::canonicalize(Path::new("/usr/bin").join(link)).unwrap(),
            Path::new("/usr/bin/stargate-hook")
        );
    }

    // man finds every page, gzipped as Debian wants.
    for (section, page) in [
        ("1", "git-remote-stargate"),
        ("1", "git-stargate"),
        ("1", "stargate-hook"),
        ("1", "git-kv"),
        ("7", "stargate"),
    ] {
        let path = must(system("man", &["-w", section, page]));
        assert_eq!(path.trim(), format!("/usr/share/man/man{section}/{page}.{section}.gz"));
    }

    // The hooks directories: one link to stargate-hook per shim in githooks/, and the
    // minimal set; nothing else.
    let names = |dir: &Path| {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    let hooks = Path::new("/usr/share/stargate/githooks");
    assert_eq!(names(hooks), names(&repo_root().join("githooks")));
    assert_eq!(
        names(Path::new("/usr/share/stargate/githooks-minimal")),
        ["pre-receive", "proc-receive", "reference-transaction"]
    );
    for dir in ["githooks", "githooks-minimal"] {
        for name in names(&Path::new("/usr/share/stargate").join(dir)) {
            let link = Path::new("/usr/share/stargate").join(dir).join(&name);
            assert_eq!(
                std::fs::canonicalize(&link).unwrap(),
                Path::new("/usr/bin/stargate-hook"),
                "{}",
                link.display()
            );
        }
    }

    // The units, as installed, pass systemd's checks (their man pages and binaries exist),
    // and none is enabled; the xinetd entry is an example only.
    let units: Vec<String> = names(Path::new("/usr/lib/systemd/system"))
        .into_iter()
        .filter(|n| n.starts_with("stargate-"))
        .map(|n| format!("/usr/lib/systemd/system/{n}"))
        .collect();
    assert_eq!(units.len(), 5, "{units:?}");
    let units: Vec<&str> = units.iter().map(String::as_str).collect();
    must(system("systemd-analyze", &[&["verify"][..], &units].concat()));
    for wants in std::fs::read_dir("/etc/systemd/system").unwrap().flatten() {
        if wants.file_name().to_string_lossy().ends_with(".wants") {
            assert!(
                names(&wants.path()).iter().all(|n| !n.starts_with("stargate-")),
                "enabled: {}",
                wants.path().display()
            );
        }
    }
    assert!(Path::new("/usr/share/doc/stargate/examples/xinetd/stargate-health").is_file());
    assert!(!Path::new("/etc/xinetd.d/stargate-health").exists());
    assert!(user_exists("git"), "the units run as git");
    assert_eq!(gitconfig(), config_before, "the package changed the machine's git config");

    // A newer build over it.
    must(system("dpkg", &["-i", &second]));
    let newer = format!("{}-2", env!("CARGO_PKG_VERSION"));
    assert_eq!(installed_version().as_deref(), Some(newer.as_str()));
    assert!(must(system("git-remote-stargate", &["--version"])).contains(stargate::version::VERSION));
    let files: Vec<String> = must(system("dpkg", &["-L", "stargate"])).lines().map(str::to_owned).collect();
    assert!(files.iter().any(|f| f == "/usr/share/stargate/githooks/pre-receive"), "{files:?}");

    must(system("dpkg", &["-r", "stargate"]));
    assert_eq!(installed_version(), None);
    assert!(!Path::new("/usr/bin/stargate-hook").exists());
    must(system("dpkg", &["-P", "stargate"]));
    let left = run(system("dpkg-query", &["-W", "-f", "${Status}", "stargate"]));
    let left = String::from_utf8_lossy(&left.stdout).into_owned();
    assert!(left.is_empty() || left.ends_with("not-installed"), "dpkg still knows it: {left}");
    // Every file gone, and every directory of its own (shared ones like /usr/bin stay).
    for f in &files {
        let path = Path::new(f);
        if path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            assert!(!f.contains("stargate"), "{f} left behind");
        } else {
            assert!(path.symlink_metadata().is_err(), "{f} left behind");
        }
    }
    assert_eq!(gitconfig(), config_before, "the package changed the machine's git config");
    // Debian keeps system users on purge: files they own may outlive the package.
    assert!(user_exists("git"), "purge removed the git user");
    if !git_user_before {
        // This test made it: leave the machine as it was found.
        must(system("deluser", &["--system", "--quiet", "git"]));
        let _ = run(system("delgroup", &["--system", "--quiet", "git"]));
    }
}
