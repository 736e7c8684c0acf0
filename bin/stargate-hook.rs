//! Multi-call entry point: hooks, `git stargate`, `git kv`, and the health responder.
fn main() -> std::process::ExitCode {
    stargate::cli::main()
}
