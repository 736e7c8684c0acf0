//! How one node's copy of a repository is reached: a local path, ssh, git daemon or
//! http(s), parsed from a base URL (`stargate.<id>.url`) and a repository path; and
//! quoting for the remote shell, as git does it.

use std::path::PathBuf;

/// A base URL or host that cannot name a repository.
#[derive(Debug, thiserror::Error)]
#[error("invalid URL {0}")]
pub struct Error(pub String);

/// How one node's copy of the repository is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A path on this machine: `git upload-pack <path>`.
    Local(PathBuf),
    /// `ssh [-p port] [user@]host "git-upload-pack '<path>'"`.
    Ssh { host: String, port: Option<u16>, path: String },
    /// `git://host[:port]/path`: a TCP connection to git daemon.
    Git { host: String, port: u16, path: String },
    /// `http(s)://…`: handed to git's own `git remote-http(s)`.
    Http(String),
}

impl Endpoint {
    /// The repository at `path` under the base URL `base` (`stargate.<id>.url`).
    pub fn join(base: &str, path: &str) -> Result<Endpoint, Error> {
        let bad = |why: &str| Error(format!("'{}': {why}", crate::wire::sanitize::text(base)));
        let with_slash = |p: &str| if p.ends_with('/') { p.to_owned() } else { format!("{p}/") };
        if base.starts_with('/') {
            return Ok(Endpoint::Local(PathBuf::from(with_slash(base) + path)));
        }
        let (scheme, rest) =
            base.split_once("://").ok_or_else(|| bad("expected ssh://, git://, file://, https:// or /path"))?;
        let (authority, base_path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let full = with_slash(base_path) + path;
        match scheme.to_ascii_lowercase().as_str() {
            "file" if authority.is_empty() || authority == "localhost" => Ok(Endpoint::Local(PathBuf::from(full))),
            "file" => Err(bad("a file:// URL names no host")),
            "ssh" | "git+ssh" | "ssh+git" => {
                let (host, port) = host_port(authority).ok_or_else(|| bad("bad [user@]host[:port]"))?;
                Ok(Endpoint::Ssh { host, port, path: tilde(full) })
            }
            "git" => {
                let (host, port) = host_port(authority).ok_or_else(|| bad("bad host[:port]"))?;
                if host.contains('@') {
                    return Err(bad("git:// takes no user name"));
                }
                Ok(Endpoint::Git { host, port: port.unwrap_or(9418), path: tilde(full) })
            }
            "http" | "https" => Ok(Endpoint::Http(format!("{scheme}://{authority}{full}"))),
            _ => Err(bad("expected ssh://, git://, file://, https:// or /path")),
        }
    }

    pub fn is_http(&self) -> bool {
        matches!(self, Endpoint::Http(_))
    }

    /// For messages: the URL git itself would show.
    pub fn display(&self) -> String {
        match self {
            Endpoint::Local(p) => p.display().to_string(),
            Endpoint::Ssh { host, port: Some(port), path } => format!("ssh://{host}:{port}{}", slash(path)),
            Endpoint::Ssh { host, port: None, path } => format!("ssh://{host}{}", slash(path)),
            Endpoint::Git { host, port: 9418, path } => format!("git://{host}{}", slash(path)),
            Endpoint::Git { host, port, path } => format!("git://{host}:{port}{}", slash(path)),
            Endpoint::Http(url) => url.clone(),
        }
    }
}

fn slash(path: &str) -> String {
    if path.starts_with('/') { path.to_owned() } else { format!("/{path}") }
}

/// git's rule for ssh:// and git:// URLs: `/~user/x` means `~user/x`.
fn tilde(path: String) -> String {
    match path.strip_prefix("/~") {
        Some(rest) => format!("~{rest}"),
        None => path,
    }
}

/// `[user@]host[:port]` of a URL, validated.
fn host_port(authority: &str) -> Option<(String, Option<u16>)> {
    if !valid_name(authority) {
        return None;
    }
    let (user, rest) = match authority.rsplit_once('@') {
        Some((u, r)) => (Some(u), r),
        None => (None, authority),
    };
    let (host, port) = split_host_port(rest);
    let port = port.map(|p| p.parse::<u16>()).transpose().ok()?;
    let host = match user {
        Some(u) => format!("{u}@{host}"),
        None => host.to_owned(),
    };
    Some((host, port))
}

/// `[user@]host[:port]`, `[user@][v6addr][:port]`, or a node id. Never starts with `-`, so
/// that it cannot be taken for an ssh option.
pub fn valid_name(name: &str) -> bool {
    let (user, rest) = match name.rsplit_once('@') {
        Some((u, r)) => (Some(u), r),
        None => (None, name),
    };
    if let Some(user) = user
        && (user.is_empty()
            || user.starts_with('-')
            || !user.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
    {
        return false;
    }
    let (host, port) = split_host_port(rest);
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !v6.is_empty() && v6.bytes().all(|b| b.is_ascii_hexdigit() || b":.%".contains(&b))
    } else {
        !host.is_empty()
            && host.len() <= 253
            && !host.starts_with(['-', '.'])
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    host_ok && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

/// The `[user@]host` of an ssh endpoint as ssh takes it on its command line: an IPv6
/// address without the brackets a URL needs around it (`ssh -p 22 git@::1`; ssh would look
/// `[::1]` up as a host name), as git itself runs ssh.
pub fn ssh_host(host: &str) -> String {
    let (user, rest) = match host.rsplit_once('@') {
        Some((u, r)) => (Some(u), r),
        None => (None, host),
    };
    let bare = rest.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(rest);
    match user {
        Some(u) => format!("{u}@{bare}"),
        None => bare.to_owned(),
    }
}

/// `host:port` → (`host`, `port`); `[v6]:port` keeps the brackets on the host.
pub fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if s.starts_with('[') {
        return match s.find(']') {
            Some(end) => match s[end + 1..].strip_prefix(':') {
                Some(port) => (&s[..=end], Some(port)),
                None => (s, None),
            },
            None => (s, None),
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    }
}

/// Quote `s` for a POSIX shell as git's `sq_quote` does: inside single quotes, with `'`
/// and `!` closed, backslash-escaped and reopened.
pub fn sq_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' | '!' => {
                out.push('\'');
                out.push('\\');
                out.push(c);
                out.push('\'');
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `stargate::[::1]:9418/...` over ssh ran `ssh -p 9418 [::1]`, which ssh cannot resolve.
    #[test]
    fn ssh_takes_ipv6_hosts_without_brackets() {
        for (base, host) in [
            ("ssh://[::1]:2222/srv", "::1"),
            ("ssh://git@[::1]/srv", "git@::1"),
            ("ssh://[::ffff:10.0.0.1]/srv", "::ffff:10.0.0.1"),
            ("ssh://git@h:22/srv", "git@h"),
            ("ssh://h/srv", "h"),
        ] {
            let Ok(Endpoint::Ssh { host: got, .. }) = Endpoint::join(base, "kv.git") else { panic!("{base}") };
            assert_eq!(ssh_host(&got), host, "{base}");
        }
    }

    #[test]
    fn joins_base_urls() {
        let j = |b: &str| Endpoint::join(b, "kv.git").unwrap();
        assert_eq!(j("/srv/git"), Endpoint::Local("/srv/git/kv.git".into()));
        assert_eq!(j("file:///srv/git/"), Endpoint::Local("/srv/git/kv.git".into()));
        assert_eq!(
            j("ssh://git@h:2222/srv/git/"),
            Endpoint::Ssh { host: "git@h".into(), port: Some(2222), path: "/srv/git/kv.git".into() }
        );
        assert_eq!(j("ssh://h/~/repos"), Endpoint::Ssh { host: "h".into(), port: None, path: "~/repos/kv.git".into() });
        assert_eq!(
            j("git://127.0.0.1/"),
            Endpoint::Git { host: "127.0.0.1".into(), port: 9418, path: "/kv.git".into() }
        );
        assert_eq!(j("https://h/git"), Endpoint::Http("https://h/git/kv.git".into()));
        for bad in ["ftp://h/", "ssh://-oProxyCommand=x/", "file://h/x", "relative/path", "git://u@h/"] {
            assert!(Endpoint::join(bad, "kv.git").is_err(), "{bad}");
        }
    }

    #[test]
    fn quotes_like_git() {
        assert_eq!(sq_quote("/srv/a b"), "'/srv/a b'");
        assert_eq!(sq_quote("x'; rm -rf /; '"), "'x'\\''; rm -rf /; '\\'''");
        assert_eq!(sq_quote("a!b"), "'a'\\!'b'");
    }
}
