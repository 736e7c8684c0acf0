//! Link `stargate-hook` as a position-dependent executable. git starts it for every hook
//! of every push (four processes for a one-ref push), and a PIE of this size spends about
//! 0.3 ms per start applying 16k relocations (162 page faults against 93); see
//! docs/ARCHITECTURE.md, "Performance". The remote helper, started once per git command,
//! stays a PIE. Both only against glibc, where it also links gcc's unwinder statically
//! (`static_unwinder`). The musl build operators install (README, Install) makes both
//! binaries static and position-dependent through `.cargo/config.toml`'s
//! `relocation-model=static` instead; without it, musl's start-up of a static PIE
//! relocates the program itself, and linking that `-no-pie` would crash it at start.
//!
//! Also name the commit the binaries are built from, for `--version` and `/status`
//! (stargate-hook(1)): `STARGATE_COMMIT` if set (a build from a source tarball can pass
//! it), else `git rev-parse --short HEAD` when this directory is a git checkout's top
//! level, else "unknown". A build without git never fails for it.
use std::path::Path;
use std::process::Command;

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu") {
        println!("cargo:rustc-link-arg-bin=stargate-hook=-no-pie");
        static_unwinder();
    }
    println!("cargo:rerun-if-env-changed=STARGATE_COMMIT");
    let commit = match std::env::var("STARGATE_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_owned(),
        _ => from_git().unwrap_or_else(|| "unknown".to_owned()),
    };
    println!("cargo:rustc-env=STARGATE_COMMIT={commit}");
}

/// The short commit of HEAD, when the manifest's directory is the top of a git work tree
/// (a tarball unpacked inside some other repository must not borrow its commit).
fn from_git() -> Option<String> {
    let here = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").current_dir(&here).args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let top = git(&["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != Path::new(&here).canonicalize().ok()? {
        return None;
    }
    // Rebuild when HEAD moves: HEAD itself, the branch it names, and packed refs. Only
    // paths that exist: a missing one would rerun this script on every build.
    let mut watch = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(branch);
    }
    for name in watch {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            let path = Path::new(&here).join(path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    git(&["rev-parse", "--short", "HEAD"]).filter(|c| !c.is_empty())
}

/// Link gcc's unwinder into `stargate-hook` rather than load `libgcc_s.so.1` at every
/// start: loading it (its constructor asks the CPU for its features, which a virtual
/// machine traps) cost 0.15 ms of the 0.25 ms a start took over `/bin/true`
/// (docs/BENCHMARKS.md). Rust's standard library asks for `-lgcc_s`; a directory searched
/// before gcc's own, holding `libgcc_eh.a` under that name, answers it with the static
/// archive. Without gcc's archive the binary links `libgcc_s.so.1` as usual.
fn static_unwinder() {
    let Ok(out) = Command::new("gcc").arg("-print-file-name=libgcc_eh.a").output() else { return };
    let archive = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let Some(dir) = std::env::var_os("OUT_DIR").map(|d| Path::new(&d).join("static-unwinder")) else { return };
    if !Path::new(&archive).is_absolute() || std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    if std::fs::copy(&archive, dir.join("libgcc_s.a")).is_ok() {
        println!("cargo:rustc-link-arg-bin=stargate-hook=-L{}", dir.display());
    }
}
