//! A minimal HTTP/1.0 client for the health responders (`/readyz`, `/status`): one request
//! per connection, one deadline for connect, request and answer, a bounded answer.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// The header in which a health responder gives its node's wall clock (milliseconds since
/// 1970), so that a replica can estimate how far the leader's clock is from its own.
pub const TIME_HEADER: &str = "Stargate-Time-Ms";

/// Longest answer read: `/status` of a node with many repositories.
const MAX_ANSWER: usize = 8 * 1024 * 1024;

/// Why a health responder gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connection refused")]
    Refused(#[source] std::io::Error),
    /// The deadline passed: connecting, sending, or waiting for the answer (the system
    /// call's error when one said so).
    #[error("no answer within {} ms", .timeout.as_millis())]
    Late {
        timeout: Duration,
        #[source]
        source: Option<std::io::Error>,
    },
    #[error("{0}")]
    Io(#[source] std::io::Error),
    #[error("answer too large")]
    TooLarge,
    #[error(transparent)]
    NotHttp(#[from] NotHttp),
}

/// What came back is not an HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an HTTP answer")]
pub struct NotHttp;

/// GET `path` from `addr` (`host:port`): the status code and the body. `timeout` is only
/// named in the error; `deadline` bounds everything.
pub fn get(addr: &str, path: &str, deadline: Instant, timeout: Duration) -> Result<(u16, String), Error> {
    get_with_head(addr, path, deadline, timeout).map(|(code, _, body)| (code, body))
}

/// As `get`, with the answer's head too.
pub fn get_with_head(
    addr: &str,
    path: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<(u16, String, String), Error> {
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Error::Refused(e),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => Error::Late { timeout, source: Some(e) },
        _ => Error::Io(e),
    };
    let left = || {
        let d = deadline.saturating_duration_since(Instant::now());
        if d.is_zero() { Err(Error::Late { timeout, source: None }) } else { Ok(d) }
    };
    let mut s = super::proto::connect(addr, addr, deadline).map_err(io)?;
    s.set_write_timeout(Some(left()?)).map_err(io)?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: stargate\r\n\r\n");
    s.write_all(request.as_bytes()).map_err(io)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        s.set_read_timeout(Some(left()?)).map_err(io)?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) if buf.len() + n > MAX_ANSWER => return Err(Error::TooLarge),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    Ok(parse(&buf)?)
}

/// A whole answer: its status code (from `HTTP/x.y <code> ...`) and its body as text.
pub fn parse_answer(buf: &[u8]) -> Result<(u16, String), NotHttp> {
    parse(buf).map(|(code, _, body)| (code, body))
}

/// A whole answer: its status code, its head and its body.
fn parse(buf: &[u8]) -> Result<(u16, String, String), NotHttp> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or(NotHttp)?;
    let mut status = head.lines().next().unwrap_or("").split(' ');
    let (version, code) = (status.next().unwrap_or(""), status.next().unwrap_or(""));
    let code = match code.parse::<u16>() {
        Ok(code) if version.starts_with("HTTP/") && (100..=599).contains(&code) => code,
        _ => return Err(NotHttp),
    };
    Ok((code, head.to_owned(), body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn answers() {
        assert_eq!(parse_answer(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nok\n"), Ok((200, "ok\n".into())));
        for bad in
            [&b""[..], b"HTTP/1.1 200 OK", b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 99999 x\r\n\r\n", b"x 200\r\n\r\n"]
        {
            assert!(parse_answer(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// A responder not reached or silent: the words the remote helper and the status show,
    /// the system call's error kept when one said so.
    #[test]
    fn failures_say_why() {
        let timeout = Duration::from_millis(200);
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let e = get(&closed, "/readyz", Instant::now() + timeout, timeout).unwrap_err();
        assert!(matches!(&e, Error::Refused(io) if io.kind() == std::io::ErrorKind::ConnectionRefused), "{e:?}");
        assert_eq!(e.to_string(), "connection refused");
        // Listening, never answering.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let e = get(&addr, "/readyz", Instant::now() + timeout, timeout).unwrap_err();
        assert!(matches!(e, Error::Late { timeout: t, .. } if t == timeout), "{e:?}");
        assert_eq!(e.to_string(), "no answer within 200 ms");
        let e = get(&addr, "/readyz", Instant::now(), timeout).unwrap_err();
        assert_eq!(e.to_string(), "no answer within 200 ms", "{e:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever a health responder (or an impostor) answers: a status code in range and
        /// a body, or "not an HTTP answer".
        #[test]
        fn any_answer_is_parsed_or_refused(
            buf in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..600),
                ("HTTP/1\\.[01] [0-9]{1,5}[ -~]{0,10}", prop::collection::vec("[ -~]{0,20}", 0..4), "\\PC{0,50}")
                    .prop_map(|(s, h, b)| format!("{s}\r\n{}\r\n\r\n{b}", h.join("\r\n")).into_bytes()),
            ]
        ) {
            match parse_answer(&buf) {
                Ok((code, body)) => {
                    prop_assert!((100..=599).contains(&code));
                    prop_assert!(body.len() <= buf.len() * 3);
                }
                Err(why) => prop_assert_eq!(why.to_string(), "not an HTTP answer"),
            }
        }
    }
}
