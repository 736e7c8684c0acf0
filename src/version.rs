//! Which build this is: the package version and the commit it was built from (build.rs
//! names the commit), as `--version`, `git stargate status` and `/status` show it.

/// This build: "0.1.0 (64fa72f)"; the commit is "unknown" when built outside a git
/// checkout, or what `STARGATE_COMMIT` said at build time (build.rs).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("STARGATE_COMMIT"), ")");
