//! `stargate-hook`, the multi-call binary: the basename of `argv[0]`, or else its first
//! argument, picks the program.

use std::ffi::OsString;
use std::process::ExitCode;

use crate::error::{self, Error};

const PROGRAMS: &str = "pre-receive, reference-transaction, health, git-stargate, git-kv";

pub fn main() -> ExitCode {
    let mut args: Vec<String> = match std::env::args_os().map(OsString::into_string).collect() {
        Ok(args) => args,
        Err(_) => {
            return error::report("stargate-hook", &Error::Usage("arguments must be UTF-8".into()));
        }
    };
    let argv0 = args.first().map(|a| a.rsplit('/').next().unwrap_or(a).to_owned()).unwrap_or_default();
    let program = if argv0 == "stargate-hook" {
        if args.len() < 2 {
            return error::report(
                "stargate-hook",
                &Error::Usage(format!("stargate-hook <program> [args]; programs: {PROGRAMS}")),
            );
        }
        args.remove(1)
    } else {
        argv0
    };
    let rest = &args[1..];
    init_logging(&program);
    let result = match program.as_str() {
        "pre-receive" => crate::hook::pre_receive(),
        "reference-transaction" => crate::hook::reference_transaction(rest),
        "health" => crate::ops::health::main(rest),
        "git-stargate" | "stargate" => crate::ops::main(rest),
        "git-kv" | "kv" => crate::kv::main(rest),
        other => Err(Error::Usage(format!("stargate-hook: unknown program '{other}'; programs: {PROGRAMS}"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => error::report(&program, &e),
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
