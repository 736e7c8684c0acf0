//! `stargate-hook`, the multi-call binary: the basename of `argv[0]`, or else its first
//! argument, picks the program: a git hook, the health responder, `git stargate` or
//! `git kv`.

use std::ffi::OsString;
use std::path::Path;

use crate::error::{self, Error};

const USAGE: &str = "\
usage: stargate-hook <program> [<args>...]
   or: <program> [<args>...]      (run through a link named after the program)

programs:
   git-stargate     operate a node: agent, status, sync, lag (git stargate --help)
   git-kv           the key/value client: set, get, del, list (git kv --help)
   health           the health responder: /healthz, /readyz, /status, /metrics
   <hook>           any git hook, such as pre-receive or reference-transaction: what the
                    links in githooks/ run (core.hooksPath)

See stargate-hook(1) and stargate(7).";

/// Run the program `argv` names; its exit status. `argv` is the process's own, as its C
/// `main` got it (`bin/stargate-hook.rs` says why not `std::env::args`).
pub fn main(argv: Vec<OsString>) -> u8 {
    let mut args: Vec<String> = match argv.into_iter().map(OsString::into_string).collect() {
        Ok(args) => args,
        Err(_) => {
            return error::report("stargate-hook", &Error::Usage("arguments must be UTF-8".into()));
        }
    };
    let invoked_as = args.first().cloned().unwrap_or_default();
    let argv0 = invoked_as.rsplit('/').next().unwrap_or(&invoked_as).to_owned();
    let program = if argv0 == "stargate-hook" {
        match args.get(1).map(String::as_str) {
            None => return error::report("stargate-hook", &Error::Usage(USAGE.into())),
            Some("-h" | "--help" | "help") => {
                println!("{USAGE}");
                return 0;
            }
            Some("-V" | "--version") => {
                println!("stargate-hook {}", crate::version::VERSION);
                return 0;
            }
            Some(_) => args.remove(1),
        }
    } else {
        argv0
    };
    // A hook lives a few milliseconds: what it allocates is never given back (`arena`).
    if crate::hook::NAMES.contains(&program.as_str()) {
        crate::arena::start();
    }
    let rest = &args[1..];
    init_logging(&program);
    let result = match program.as_str() {
        "health" => crate::ops::health::main(rest),
        "git-stargate" | "stargate" => crate::ops::main(rest),
        "git-kv" | "kv" => crate::kv::main(rest),
        hook if crate::hook::NAMES.contains(&hook) => crate::hook::run(hook, Path::new(&invoked_as), rest),
        other => Err(Error::Usage(format!("unknown program '{other}'\n\n{USAGE}"))),
    };
    // A hook's refusal reaches the pushing client through git: it says who refused.
    let shown = if crate::hook::NAMES.contains(&program.as_str()) { "stargate" } else { program.as_str() };
    match result {
        Ok(()) => 0,
        Err(e) => error::report(shown, &e),
    }
}

/// Logs go to stderr; `STARGATE_LOG` (env_logger syntax) overrides the level. Long-running
/// programs log `info`, short ones only warnings, so a hook's output stays the refusal.
fn init_logging(program: &str) {
    let default = if matches!(program, "git-stargate" | "stargate" | "health") { "info" } else { "warn" };
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("STARGATE_LOG", default))
        .format_target(false)
        .init();
}
