//! A minimal HTTP/1.0 client for the health responders (`/readyz`, `/status`): one request
//! per connection, one deadline for connect, request and answer, a bounded answer.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// The header in which a health responder gives its node's wall clock (milliseconds since
/// 1970), so that a replica can estimate how far the leader's clock is from its own.
pub const TIME_HEADER: &str = "Stargate-Time-Ms";

/// Longest answer read: `/status` of a node with many repositories.
const MAX_ANSWER: usize = 8 * 1024 * 1024;

/// GET `path` from `addr` (`host:port`): the status code and the body. `timeout` is only
/// named in the error; `deadline` bounds everything.
pub fn get(addr: &str, path: &str, deadline: Instant, timeout: Duration) -> Result<(u16, String), String> {
    get_with_head(addr, path, deadline, timeout).map(|(code, _, body)| (code, body))
}

/// As `get`, with the answer's head too.
pub fn get_with_head(
    addr: &str,
    path: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<(u16, String, String), String> {
    let late = || format!("no answer within {} ms", timeout.as_millis());
    let io_why = |e: &std::io::Error| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => late(),
        _ => e.to_string(),
    };
    let left = || {
        let d = deadline.saturating_duration_since(Instant::now());
        if d.is_zero() { Err(late()) } else { Ok(d) }
    };
    let mut s = super::proto::connect(addr, addr, deadline).map_err(|e| io_why(&e))?;
    s.set_write_timeout(Some(left()?)).map_err(|e| io_why(&e))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: stargate\r\n\r\n");
    s.write_all(request.as_bytes()).map_err(|e| io_why(&e))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        s.set_read_timeout(Some(left()?)).map_err(|e| io_why(&e))?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) if buf.len() + n > MAX_ANSWER => return Err("answer too large".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_why(&e)),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("not an HTTP answer")?;
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or("not an HTTP answer")?;
    Ok((code, head.to_owned(), body.to_owned()))
}
