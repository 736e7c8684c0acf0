//! `git-remote-stargate`: the remote helper git runs for `stargate::` URLs.
fn main() -> std::process::ExitCode {
    stargate::remote::main()
}
