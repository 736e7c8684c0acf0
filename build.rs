//! Link `stargate-hook` as a position-dependent executable. git starts it for every hook
//! of every push (six processes for a one-ref push), and a PIE of this size spends about
//! 0.3 ms per start applying 16k relocations (162 page faults against 93); see
//! docs/ARCHITECTURE.md, "Performance". The remote helper, started once per git command,
//! stays a PIE.
fn main() {
    println!("cargo:rustc-link-arg-bin=stargate-hook=-no-pie");
}
