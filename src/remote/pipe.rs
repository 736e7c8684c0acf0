//! Starting the service on the chosen node (`git upload-pack <path>` locally, over ssh, or
//! a `git://` connection) and then copying bytes between git and it. Pipe-to-pipe copies
//! go through `std::io::copy`, which splices without passing the data through user space.

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::Config;

use super::url::Node;
use super::{Error, Options, Service, Unreached};
use crate::wire::endpoint::{Endpoint, sq_quote};

/// How long a `git://` connection may take to open, once the node was chosen.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A service that has started talking: its first bytes, not yet passed on to git.
pub struct Opened {
    first: Vec<u8>,
    conn: Conn,
    what: String,
}

enum Conn {
    Process { child: Child, stdout: ChildStdout, stderr: Option<JoinHandle<()>> },
    Tcp(TcpStream),
}

/// Start `service` on `node` and wait for its first bytes. Until this returns `Ok`, git has
/// been sent nothing, so any error here may be retried elsewhere.
pub fn open(
    node: &Node,
    service: Service,
    protocol: Option<&str>,
    options: &Options,
    cfg: &Config,
) -> Result<Opened, Error> {
    let fail = |why: Unreached| Error::Connect { node: node.name.clone(), url: node.endpoint.display(), why };
    match &node.endpoint {
        Endpoint::Local(path) => {
            let child = crate::wire::git::spawn_service(service.name(), options.servpath.as_deref(), path, protocol)
                .map_err(|e| fail(Unreached::Git(e)))?;
            process(node, child, format!("{} {}", service.name(), path.display()))
        }
        Endpoint::Ssh { host, port, path } => {
            let program = options.servpath.as_deref().unwrap_or(service.name());
            let remote = format!("{program} {}", sq_quote(path));
            let child = ssh(cfg, host, *port, &remote, protocol)?.spawn().map_err(|e| fail(Unreached::Ssh(e)))?;
            process(node, child, format!("ssh {host} {remote}"))
        }
        Endpoint::Git { host, port, path } => {
            let deadline = std::time::Instant::now() + CONNECT_TIMEOUT;
            let mut stream =
                crate::wire::proto::connect_host(host, *port, deadline).map_err(|e| fail(Unreached::Daemon(e)))?;
            let mut request = format!("{} {path}\0host={host}", service.name());
            if *port != 9418 {
                request += &format!(":{port}");
            }
            request.push('\0');
            if let Some(p) = protocol {
                request += &format!("\0{p}\0");
            }
            let pkt = format!("{:04x}{request}", request.len() + 4);
            stream.write_all(pkt.as_bytes()).map_err(|e| fail(Unreached::Daemon(e)))?;
            let mut first = vec![0u8; 64 * 1024];
            let n = read_some(&mut QuickAck(&stream), &mut first).map_err(|e| fail(Unreached::Daemon(e)))?;
            if n == 0 {
                return Err(fail(Unreached::DaemonClosed));
            }
            first.truncate(n);
            Ok(Opened { first, conn: Conn::Tcp(stream), what: format!("git://{host}") })
        }
        Endpoint::Http(_) => Err(fail(Unreached::Https)),
    }
}

fn read_some(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// A started local or ssh process: its stderr is relayed (sanitized), its first bytes read.
fn process(node: &Node, mut child: Child, what: String) -> Result<Opened, Error> {
    let (Some(mut stdout), stderr) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        return Err(Error::NoPipes("child"));
    };
    let stderr = stderr.map(|e| std::thread::spawn(move || relay_stderr(e)));
    let mut first = vec![0u8; 64 * 1024];
    let (n, read_error) = match read_some(&mut stdout, &mut first) {
        Ok(n) => (n, None),
        Err(e) => {
            let _ = child.kill();
            (0, Some(e))
        }
    };
    if n == 0 {
        let mut status = child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
        if let Some(e) = read_error {
            status = format!("{e}; {status}");
        }
        if let Some(t) = stderr {
            let _ = t.join();
        }
        return Err(Error::Connect {
            node: node.name.clone(),
            url: node.endpoint.display(),
            why: Unreached::Silent { what, status },
        });
    }
    first.truncate(n);
    Ok(Opened { first, conn: Conn::Process { child, stdout, stderr }, what })
}

/// Copy a child's stderr to ours line by line, without terminal escapes.
fn relay_stderr(stderr: impl Read) {
    let mut reader = io::BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let mut text = crate::wire::sanitize::text(&String::from_utf8_lossy(&line));
                if line.ends_with(b"\n") && !text.ends_with('\n') {
                    text.push('\n');
                }
                let _ = io::stderr().write_all(text.as_bytes());
            }
        }
    }
}

impl Opened {
    /// Close without passing anything to git (the remote end sees a client that left).
    pub fn abandon(self) {
        match self.conn {
            Conn::Process { mut child, stdout, stderr } => {
                drop(stdout);
                let _ = child.kill();
                let _ = child.wait();
                if let Some(t) = stderr {
                    let _ = t.join();
                }
            }
            Conn::Tcp(s) => {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// Tell git the connection is up, then pipe until the service is done.
    pub fn run(self, node: &str) -> Result<(), Error> {
        let mut out = super::stdout_file()?;
        grow_pipe(&out);
        let started = out.write_all(b"\n").and_then(|()| out.write_all(&self.first)).and_then(|()| out.flush());
        match self.conn {
            Conn::Process { mut child, mut stdout, stderr } => {
                grow_pipe(&stdout);
                let copied = started.and_then(|()| io::copy(&mut stdout, &mut out));
                drop(out);
                if copied.is_err() {
                    // git stopped reading: it is finished with this service, one way or another.
                    let _ = child.kill();
                }
                let status = child.wait().map_err(Error::io(&self.what))?;
                if let Some(t) = stderr {
                    let _ = t.join();
                }
                match (copied, status.success()) {
                    (Err(_), _) | (Ok(_), true) => Ok(()),
                    (Ok(_), false) => {
                        Err(Error::Service { node: node.to_owned(), what: self.what, status: status.to_string() })
                    }
                }
            }
            Conn::Tcp(stream) => {
                started.map_err(Error::io("writing to git"))?;
                let mut to_server = stream.try_clone().map_err(Error::Pipe)?;
                let mut input = super::stdin_file()?;
                std::thread::spawn(move || {
                    let _ = copy_plain(&mut input, &mut to_server);
                    let _ = to_server.shutdown(Shutdown::Write);
                });
                let _ = copy_plain(&mut QuickAck(&stream), &mut out);
                let _ = out.flush();
                Ok(())
            }
        }
    }
}

/// A socket whose reads are acknowledged at once: without it each git daemon response
/// after the first small write waits 40 ms (see `crate::wire::proto`).
struct QuickAck<'a>(&'a TcpStream);

impl Read for QuickAck<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        crate::wire::proto::quickack(self.0);
        (&mut &*self.0).read(buf)
    }
}

/// Give a pipe 1 MiB (the unprivileged maximum) instead of 64 KiB, so that a hop through
/// the helper does not throttle a large transfer. Not a pipe, or not allowed: left as is.
fn grow_pipe(fd: &impl std::os::fd::AsRawFd) {
    // SAFETY: fcntl on a descriptor we own; a failure changes nothing.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
}

/// Copy with `read` and `write`, flushing every write (stdout is line-buffered, and the
/// Git protocol's lines are not all text). Not `io::copy` for sockets: it splices, and
/// splicing a pipe into a socket asks for far more than is there, so the kernel holds the
/// last bytes back (`MSG_MORE`) waiting for the rest and a request-response protocol
/// stalls; splicing the socket into git's pipe stalled the same sessions in our tests.
pub(super) fn copy_plain(from: &mut impl Read, to: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 128 * 1024];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        to.flush()?;
        total += n as u64;
    }
}

/// The ssh command git itself would run (`wire::ssh`), its stdio for a pipe.
fn ssh(cfg: &Config, host: &str, port: Option<u16>, remote: &str, protocol: Option<&str>) -> Result<Command, Error> {
    let ssh = crate::wire::ssh::Ssh {
        command: cfg.ssh_command().map(str::to_owned),
        variant: cfg.ssh_variant().map(str::to_owned),
        control: None,
    };
    let mut cmd = ssh.command(host, port, remote, protocol, None).map_err(|e| Error::Url(e.to_string()))?;
    cmd.stdin(Stdio::inherit()).stdout(Stdio::piped()).stderr(Stdio::piped());
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv6 node over ssh: `ssh -p 9418 ::1`, the brackets of the URL gone.
    #[test]
    fn ssh_is_given_an_ipv6_host_without_brackets() {
        let spec = crate::remote::url::parse("stargate::[::1]:9418/kv.git").unwrap();
        let cfg = Config::from_entries([("stargate.transport".to_owned(), "ssh".to_owned())]);
        let nodes = crate::remote::url::nodes(&spec, &cfg).unwrap();
        let Endpoint::Ssh { host, port, .. } = &nodes[0].endpoint else { panic!("{:?}", nodes[0].endpoint) };
        let cmd = ssh(&cfg, host, *port, "git-upload-pack '/kv.git'", None).unwrap();
        let args: Vec<&str> = cmd.get_args().filter_map(|a| a.to_str()).collect();
        // Whatever ssh command the environment names, the host and port end the options.
        let at = args.iter().position(|a| *a == "::1").unwrap_or_else(|| panic!("no bare host in {args:?}"));
        assert_eq!(&args[at - 2..at], ["-p", "9418"], "{args:?}");
        assert!(!args.iter().any(|a| a.contains('[')), "{args:?}");
    }
}
