//! `https://` (and `http://`) nodes: git's own `git remote-https` does the work. It is
//! started for the leader and sees every command; when the first command that shows the
//! direction is a read that `stargate.readFrom` sends elsewhere, it is restarted for that
//! node and the earlier commands replayed. After that the helper only copies bytes.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout};

use crate::config::ReadFrom;

use super::resolve::Op;
use super::{Error, Options, Session, read_line};
use crate::wire::endpoint::Endpoint;

struct Helper {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    node: usize,
}

impl Helper {
    fn start(session: &Session, alias: &str, node: usize) -> Result<Helper, Error> {
        let Endpoint::Http(url) = &session.nodes[node].endpoint else {
            return Err(Error::NotHttps);
        };
        let mut child =
            crate::wire::git::spawn_remote_helper(alias, url).map_err(Error::io("cannot run git remote-https"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(Error::NoPipes("git remote-https"));
        };
        Ok(Helper { child, stdin, stdout: BufReader::new(stdout), node })
    }

    fn send(&mut self, line: &str) -> Result<(), Error> {
        let io = |e| Error::io("git remote-https")(e);
        self.stdin.write_all(line.as_bytes()).map_err(io)?;
        self.stdin.write_all(b"\n").map_err(io)?;
        self.stdin.flush().map_err(io)
    }

    /// The answer to `line`: up to a blank line for `capabilities`, else one line.
    fn answer(&mut self, line: &str) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        loop {
            let start = out.len();
            let n = self.stdout.read_until(b'\n', &mut out).map_err(Error::io("git remote-https"))?;
            if n == 0 {
                return Err(Error::HelperEnded);
            }
            if line != "capabilities" || out[start..] == *b"\n" {
                return Ok(out);
            }
        }
    }

    fn stop(mut self) {
        drop(self.stdin);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which way a command points, once it shows.
fn direction(line: &str) -> Option<Op> {
    let word = line.split(' ').next().unwrap_or("");
    match word {
        "capabilities" | "option" => None,
        "push" => Some(Op::Write),
        "list" if line == "list for-push" => Some(Op::Write),
        _ => Some(Op::Read),
    }
}

pub fn run(session: &Session, alias: &str, input: &mut File, output: &mut impl Write) -> Result<(), Error> {
    let mut options = Options::default();
    let (first, mut leader) = match session.resolve(Op::Write, &options) {
        Ok(c) => (c.node, c.leader),
        Err(e) if session.policy.read_from == ReadFrom::Leader => return Err(e),
        Err(_) => {
            let c = session.resolve(Op::Read, &options)?;
            (c.node, c.leader)
        }
    };
    let mut helper = Helper::start(session, alias, first)?;
    let mut setup: Vec<String> = Vec::new();
    let io = |e| Error::io("writing to git")(e);
    let line = loop {
        let Some(line) = read_line(input)? else {
            helper.stop();
            return Err(Error::Protocol("input ended before a command".into()));
        };
        match direction(&line) {
            None => {
                if let Some(rest) = line.strip_prefix("option ") {
                    let _ = super::option(rest, &mut options);
                }
                helper.send(&line)?;
                let answer = helper.answer(&line)?;
                output.write_all(&answer).and_then(|()| output.flush()).map_err(io)?;
                setup.push(line);
            }
            Some(Op::Read) if session.policy.read_from != ReadFrom::Leader => {
                let (memory, known) = session.recall(Op::Read);
                let choice = session.choose(Op::Read, &options, memory.as_ref(), known)?;
                let target = choice.node;
                leader = choice.leader;
                if target != helper.node {
                    helper.stop();
                    helper = Helper::start(session, alias, target)?;
                    for earlier in &setup {
                        helper.send(earlier)?;
                        helper.answer(earlier)?;
                    }
                }
                break line;
            }
            Some(_) => break line,
        }
    };
    let op = direction(&line).unwrap_or(Op::Read);
    helper.send(&line)?;
    let Helper { mut child, stdin, mut stdout, node } = helper;
    let mut input = input.try_clone().map_err(Error::Pipe)?;
    std::thread::spawn(move || {
        let mut stdin = stdin;
        let _ = super::pipe::copy_plain(&mut input, &mut stdin);
    });
    let _ = super::pipe::copy_plain(&mut stdout, output);
    let status = child.wait().map_err(Error::Pipe)?;
    if status.success() {
        let (memory, known) = session.recall(op);
        if let Some(memory) = &memory {
            session.remember(op, node, leader, known, memory, &options);
        }
        Ok(())
    } else {
        Err(Error::Service {
            node: session.nodes[node].name.clone(),
            what: "git remote-https".into(),
            status: status.to_string(),
        })
    }
}
