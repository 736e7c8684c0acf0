//! `stargate::<name>[,<name>…]/<path>` URLs: parsing and validation, and where each
//! name's repository is (its endpoint in `wire::endpoint`).

use crate::config::{Config, Transport};
use crate::wire::endpoint::{Endpoint, split_host_port, valid_name};

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
    let bad = |why: &str| Error::Url(format!("'{}': {why}", crate::wire::sanitize::text(url)));
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
                crate::wire::sanitize::text(name)
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
                let endpoint = host_endpoint(name, cfg.transport()?, &spec.path)?;
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

/// The endpoint of a name that is not a configured node id, over `transport`.
fn host_endpoint(name: &str, transport: Transport, path: &str) -> Result<Endpoint, Error> {
    let scheme = match transport {
        Transport::Ssh => "ssh",
        Transport::Git => "git",
        Transport::Https => "https",
        Transport::File => {
            return Err(Error::Url(format!(
                "'{name}' is not a configured node (no stargate.{name}.url), and stargate.transport=file needs one (stargate(7))"
            )));
        }
    };
    Endpoint::join(&format!("{scheme}://{name}/"), path).map_err(Error::from)
}

/// `http://host:port[/…]` → `host:port` (validated by the config accessor).
fn health_addr(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    rest.split('/').next().unwrap_or(rest).to_owned()
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
}
