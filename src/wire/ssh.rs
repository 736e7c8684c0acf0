//! The ssh command git itself would run to reach a repository: `GIT_SSH_COMMAND`,
//! `core.sshCommand`, `GIT_SSH`, else `ssh`; options in the dialect `ssh.variant` (or the
//! program's name) says. The remote helper pipes git through it, and mirroring speaks
//! protocol v2 over it (`proto`).

use std::process::Command;
use std::time::Duration;

/// What the configuration says about ssh (`core.sshCommand`, `ssh.variant`).
#[derive(Debug, Clone, Default)]
pub struct Ssh {
    pub command: Option<String>,
    pub variant: Option<String>,
}

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
        let ssh = Ssh { command: Some("ssh -i key".into()), variant: None };
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
        let simple = Ssh { command: None, variant: Some("simple".into()) };
        assert!(simple.command("h", Some(22), "x", None, None).is_err());
        assert!(simple.command("h", None, "x", None, None).is_ok());
    }
}
