//! `stargate::<name>[,<name>…]/<path>` URLs: parsing and validation, where each name's
//! repository is (its endpoint), and quoting for the remote shell.

use std::path::PathBuf;

use crate::config::{Config, Transport};

use super::Error;

/// Longest repository path accepted.
const MAX_PATH: usize = 4096;
/// At most this many names in one URL.
const MAX_NAMES: usize = 16;

/// A parsed `stargate::` URL (without the `stargate::` prefix, as git passes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub names: Vec<String>,
    /// Relative to each node's base URL: no leading `/`, no empty, `.` or `..` component.
    pub path: String,
}

pub fn parse(url: &str) -> Result<Spec, Error> {
    let bad = |why: &str| Error::Url(format!("'{}': {why}", crate::sanitize::text(url)));
    let url = url.strip_prefix("stargate::").unwrap_or(url);
    let (names, path) = url.split_once('/').ok_or_else(|| bad("expected stargate::<name>[,<name>…]/<path>"))?;
    let names: Vec<String> = names.split(',').map(str::to_owned).collect();
    if names.len() > MAX_NAMES {
        return Err(bad("too many names"));
    }
    for name in &names {
        if !valid_name(name) {
            return Err(bad(&format!(
                "'{}' is neither a node id nor a [user@]host[:port]",
                crate::sanitize::text(name)
            )));
        }
    }
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(bad(&format!("'{name}' is named twice")));
        }
    }
    validate_path(path).map_err(bad)?;
    Ok(Spec { names, path: path.to_owned() })
}

fn validate_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("no repository path");
    }
    if path.len() > MAX_PATH {
        return Err("repository path too long");
    }
    if path.chars().any(char::is_control) {
        return Err("control character in the repository path");
    }
    if path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err("the repository path has an empty, '.' or '..' component");
    }
    Ok(())
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

/// `host:port` → (`host`, `port`); `[v6]:port` keeps the brackets on the host.
fn split_host_port(s: &str) -> (&str, Option<&str>) {
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
        let bad = |why: &str| Error::Url(format!("'{}': {why}", crate::sanitize::text(base)));
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

    /// The endpoint of a name that is not a configured node id, over `transport`.
    pub fn for_host(name: &str, transport: Transport, path: &str) -> Result<Endpoint, Error> {
        let scheme = match transport {
            Transport::Ssh => "ssh",
            Transport::Git => "git",
            Transport::Https => "https",
            Transport::File => {
                return Err(Error::Url(format!(
                    "'{name}' is not a configured node (no stargate.{name}.url), and stargate.transport=file needs one"
                )));
            }
        };
        Endpoint::join(&format!("{scheme}://{name}/"), path)
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

/// One name of a `stargate::` URL, resolved through the configuration.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub endpoint: Endpoint,
    /// `host:port` of its health responder, if known.
    pub health: Option<String>,
    /// A configured node id (`stargate.<id>.url`), as opposed to a host name.
    pub configured: bool,
}

/// Every name of `spec` as a node: a configured id uses `stargate.<id>.url` and
/// `stargate.<id>.health`; any other name is a host reached over `stargate.transport`, with
/// its health responder on `stargate.healthPort`.
pub fn nodes(spec: &Spec, cfg: &Config) -> Result<Vec<Node>, Error> {
    let mut nodes = Vec::new();
    for name in &spec.names {
        let node = match cfg.node_url(name)? {
            Some(base) => Node {
                name: name.clone(),
                endpoint: Endpoint::join(&base, &spec.path)?,
                health: cfg.node_health(name)?.map(|h| health_addr(&h)),
                configured: true,
            },
            None => {
                let endpoint = Endpoint::for_host(name, cfg.transport()?, &spec.path)?;
                let host = split_host_port(name.rsplit_once('@').map_or(name.as_str(), |(_, h)| h)).0;
                Node {
                    name: name.clone(),
                    endpoint,
                    health: Some(format!("{host}:{}", cfg.health_port()?)),
                    configured: false,
                }
            }
        };
        nodes.push(node);
    }
    if nodes.iter().any(|n| n.endpoint.is_http()) && !nodes.iter().all(|n| n.endpoint.is_http()) {
        return Err(Error::Url("mixes https:// nodes with other transports; use one kind for all names".into()));
    }
    Ok(nodes)
}

/// `http://host:port[/…]` → `host:port` (validated by the config accessor).
fn health_addr(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    rest.split('/').next().unwrap_or(rest).to_owned()
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

    #[test]
    fn parses_names_and_path() {
        let s = parse("a,b/owner/kv.git").unwrap();
        assert_eq!(s.names, ["a", "b"]);
        assert_eq!(s.path, "owner/kv.git");
        assert_eq!(parse("stargate::git@stargate.local:2222/kv.git").unwrap().names, ["git@stargate.local:2222"]);
        assert_eq!(parse("[::1]:22/x").unwrap().names, ["[::1]:22"]);
        for bad in [
            "",
            "a",
            "a/",
            "/kv.git",
            "a,,b/kv.git",
            "a,a/kv.git",
            "-oProxyCommand=x/kv.git",
            "a b/kv.git",
            "a/../etc/passwd",
            "a/x//y",
            "a/./x",
            "a/x\n",
            "a/x\u{1b}[2J",
            "u@-h/x",
            "a:99999/x",
            "a:/x",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
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
