//! The ssh command git itself would run to reach a repository: `GIT_SSH_COMMAND`,
//! `core.sshCommand`, `GIT_SSH`, else `ssh`; options in the dialect `ssh.variant` (or the
//! program's name) says. The remote helper pipes git through it, and mirroring speaks
//! protocol v2 over it (`proto`).
//!
//! Mirroring shares connections: every sync is a session, and a node syncs each repository
//! on every write and every interval, so a handshake per sync (key exchange, host key,
//! authentication: tens of milliseconds of CPU on both ends) would cost more than the sync.
//! With a control directory, OpenSSH keeps one master connection per peer and command
//! (`ControlMaster=auto`, closed `CONTROL_PERSIST` after its last use) and each session is
//! a channel of it. The host key and the client key are checked when that connection opens:
//! a changed `core.sshCommand` (another key, other options) names another socket, so it
//! opens a connection of its own. A peer that is gone does not answer on the master's
//! channels either, which the session's deadline covers; keepalives close such a master.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What the configuration says about ssh (`core.sshCommand`, `ssh.variant`), and where
/// shared connections keep their sockets (`control`; none: a connection per command).
#[derive(Debug, Clone, Default)]
pub struct Ssh {
    pub command: Option<String>,
    pub variant: Option<String>,
    pub control: Option<PathBuf>,
}

/// How long a shared connection stays open after its last session.
const CONTROL_PERSIST: &str = "60";

/// Longest socket path the kernel takes (`sun_path`, 108 bytes with its NUL), less the
/// suffix ssh adds to the temporary name it binds first.
const MAX_SOCKET_PATH: usize = 107 - 17;

#[derive(Debug, thiserror::Error)]
#[error("ssh.variant=simple cannot connect to a port ({host}:{port})")]
pub struct SimpleWithPort {
    host: String,
    port: u16,
}

impl Ssh {
    /// `ssh [options] <host> <remote>`, with `GIT_PROTOCOL` sent when `protocol` is given,
    /// and, for OpenSSH, `ConnectTimeout` when `connect_timeout` is (whole seconds, at
    /// least one). Stdio left for the caller to set.
    pub fn command(
        &self,
        host: &str,
        port: Option<u16>,
        remote: &str,
        protocol: Option<&str>,
        connect_timeout: Option<Duration>,
    ) -> Result<Command, SimpleWithPort> {
        let env_command = std::env::var("GIT_SSH_COMMAND").ok().filter(|c| !c.trim().is_empty());
        let configured = self.command.as_deref().filter(|c| !c.trim().is_empty());
        let (mut cmd, program) = match (env_command, configured, std::env::var("GIT_SSH").ok()) {
            (Some(c), _, _) => (shell(&c), c),
            (None, Some(c), _) => (shell(c), c.to_owned()),
            (None, _, Some(p)) if !p.is_empty() => (Command::new(&p), p),
            _ => (Command::new("ssh"), "ssh".to_owned()),
        };
        let first_word = program.split_whitespace().next().unwrap_or("ssh");
        let basename =
            first_word.rsplit('/').next().unwrap_or(first_word).trim_end_matches(".exe").to_ascii_lowercase();
        let variant = match self.variant.as_deref().map(str::to_ascii_lowercase) {
            Some(v) if v != "auto" => v,
            _ if basename == "plink" => "plink".to_owned(),
            _ if basename == "tortoiseplink" => "tortoiseplink".to_owned(),
            _ => "ssh".to_owned(),
        };
        match variant.as_str() {
            "simple" => {
                if let Some(port) = port {
                    return Err(SimpleWithPort { host: host.to_owned(), port });
                }
            }
            "plink" | "putty" | "tortoiseplink" => {
                if variant == "tortoiseplink" {
                    cmd.arg("-batch");
                }
                if let Some(p) = port {
                    cmd.args(["-P", &p.to_string()]);
                }
            }
            _ => {
                if protocol.is_some() {
                    cmd.args(["-o", "SendEnv=GIT_PROTOCOL"]);
                }
                if let Some(socket) = self.control_socket(&program, host, port) {
                    cmd.args(["-o", "ControlMaster=auto", "-o", &format!("ControlPersist={CONTROL_PERSIST}")]);
                    cmd.arg("-o").arg(format!("ControlPath={}", socket.display()));
                    cmd.args(["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2"]);
                }
                if let Some(t) = connect_timeout {
                    cmd.arg("-o").arg(format!("ConnectTimeout={}", t.as_secs_f64().ceil().max(1.0) as u64));
                }
                if let Some(p) = port {
                    cmd.args(["-p", &p.to_string()]);
                }
            }
        }
        cmd.arg(super::endpoint::ssh_host(host)).arg(remote);
        for var in super::git::LOCAL_ENV {
            cmd.env_remove(var);
        }
        match protocol {
            Some(p) => cmd.env("GIT_PROTOCOL", p),
            None => cmd.env_remove("GIT_PROTOCOL"),
        };
        Ok(cmd)
    }
}

impl Ssh {
    /// The socket of the connection shared by every session of `program` to `host` and
    /// `port`: none without a control directory, when the command sets up its own
    /// (`ControlPath`, `ControlMaster`, `-S`), when the path would be too long for a
    /// socket, or when the directory cannot be made private.
    fn control_socket(&self, program: &str, host: &str, port: Option<u16>) -> Option<PathBuf> {
        let dir = self.control.as_deref()?;
        let lower = program.to_ascii_lowercase();
        if lower.contains("controlpath")
            || lower.contains("controlmaster")
            || program.split_whitespace().any(|w| w == "-S")
        {
            return None;
        }
        let socket = dir.join(format!("{:016x}", fnv1a(&format!("{program}\0{host}\0{port:?}"))));
        if socket.as_os_str().len() > MAX_SOCKET_PATH || !private_dir(dir) {
            log::debug!("ssh: no shared connection for {host} (socket {})", socket.display());
            return None;
        }
        Some(socket)
    }
}

/// `dir` exists and only its owner can use it (the sockets in it connect as this node).
fn private_dir(dir: &Path) -> bool {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let _ = std::fs::DirBuilder::new().mode(0o700).recursive(true).create(dir);
    std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o077 == 0)
}

/// FNV-1a, 64 bits: a socket name that is the same in every process and build.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// `sh -c '<command> "$@"' '<command>' args…`, as git runs configured commands.
fn shell(command: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(format!("{command} \"$@\"")).arg(command);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OpenSSH gets GIT_PROTOCOL, the connect timeout (whole seconds, rounded up) and the
    /// port, then the host without an IPv6 address's brackets; `simple` refuses a port.
    /// (`GIT_SSH_COMMAND` in the environment, as a site may set, names the program.)
    #[test]
    fn commands_in_each_dialect() {
        let ssh = Ssh { command: Some("ssh -i key".into()), variant: None, control: None };
        let cmd = ssh
            .command(
                "[::1]",
                Some(2222),
                "git-upload-pack '/kv.git'",
                Some("version=2"),
                Some(Duration::from_millis(1500)),
            )
            .unwrap();
        let joined: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let joined = joined.join(" ");
        assert!(joined.contains("-o SendEnv=GIT_PROTOCOL -o ConnectTimeout=2 -p 2222 ::1 git-upload-pack"), "{joined}");
        let simple = Ssh { command: None, variant: Some("simple".into()), control: None };
        assert!(simple.command("h", Some(22), "x", None, None).is_err());
        assert!(simple.command("h", None, "x", None, None).is_ok());
    }

    /// With a control directory, OpenSSH shares one connection per command and peer; a
    /// command that sets up its own, or a directory too long for a socket, gets none.
    #[test]
    fn shared_connections_per_command_and_peer() {
        let dir = tempfile::tempdir().unwrap();
        let control = dir.path().join("ssh");
        let args = |command: &str, host: &str| {
            let ssh = Ssh { command: Some(command.into()), variant: None, control: Some(control.clone()) };
            let cmd = ssh.command(host, None, "git-upload-pack 'x'", Some("version=2"), None).unwrap();
            cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
        };
        let path = |args: &str| args.split_whitespace().find_map(|w| w.strip_prefix("ControlPath=")).map(str::to_owned);
        let one = args("ssh -i key", "a");
        assert!(one.contains("-o ControlMaster=auto -o ControlPersist=60"), "{one}");
        assert!(path(&one).unwrap().starts_with(control.to_str().unwrap()), "{one}");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&control).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(path(&args("ssh -i key", "a")), path(&one), "the same socket every time");
        assert_ne!(path(&args("ssh -i other", "a")), path(&one), "another key, another connection");
        assert_ne!(path(&args("ssh -i key", "b")), path(&one), "another peer, another connection");
        assert!(!args("ssh -o ControlPath=/x/%C", "a").contains("ControlMaster=auto"));
        assert!(!args("ssh -S /x/s", "a").contains("ControlMaster=auto"));
        let long = Ssh { command: None, variant: None, control: Some(dir.path().join("d".repeat(100))) };
        let cmd = long.command("a", None, "x", None, None).unwrap();
        assert!(!cmd.get_args().any(|a| a.to_string_lossy().starts_with("ControlPath")));
    }
}
