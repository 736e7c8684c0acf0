//! Stargate behind the Git servers operators run: smart HTTP through nginx, fcgiwrap and
//! `git http-backend` with the configuration in contrib/nginx, and gitolite3 behind sshd
//! as contrib/gitolite describes it. Real servers on the lab's addresses, started from
//! configuration files in temporary directories and stopped on drop.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// Processes started in their own process group, ended with the whole group on drop
/// (fcgiwrap's preforked children, nginx's workers).
struct Group(Vec<Child>);

impl Group {
    fn spawn(&mut self, mut c: Command, log: &Path) {
        let log = std::fs::File::create(log).unwrap();
        c.process_group(0).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        self.0.push(c.spawn().unwrap_or_else(|e| panic!("cannot start {c:?}: {e}")));
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for sig in [libc::SIGTERM, libc::SIGKILL] {
            for child in &self.0 {
                // SAFETY: signals the process group this struct started.
                unsafe { libc::kill(-(child.id() as libc::pid_t), sig) };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

/// `text` with each `(from, to)` replaced, asserting that `from` is there: the tests run the
/// shipped file, changed only where a real site would change it.
fn adapt(text: &str, what: &str, replacements: &[(&str, String)]) -> String {
    let mut text = text.to_owned();
    for (from, to) in replacements {
        assert!(text.contains(from), "{what} no longer contains {from:?}");
        text = text.replace(from, to);
    }
    text
}

/// nginx and fcgiwrap serving one node's repositories at `ip:8181`, with
/// contrib/nginx/stargate-git.conf; pushes need the user `git`, password `secret`.
struct Nginx {
    dir: tempfile::TempDir,
    _procs: Group,
}

impl Nginx {
    fn start(ip: &str, repos: &Path) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let shipped = std::fs::read_to_string(repo_root().join("contrib/nginx/stargate-git.conf")).unwrap();
        let site = adapt(
            &shipped,
            "contrib/nginx/stargate-git.conf",
            &[
                ("listen 80;", format!("listen {ip}:8181;")),
                ("/run/fcgiwrap.socket", d.join("fcgiwrap.socket").display().to_string()),
                ("/srv/git;", format!("{};", repos.display())),
                ("/etc/nginx/git.htpasswd", d.join("htpasswd").display().to_string()),
            ],
        );
        std::fs::write(d.join("site.conf"), site).unwrap();
        std::fs::write(d.join("htpasswd"), "git:{PLAIN}secret\n").unwrap();
        // The rest of what /etc/nginx/nginx.conf would say, with every path in `d`.
        let p = d.display();
        std::fs::write(
            d.join("nginx.conf"),
            format!(
                "daemon off;\nuser root;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log info;\n\
                 events {{ worker_connections 64; }}\nhttp {{\n  access_log {p}/access.log;\n\
                 client_body_temp_path {p}/body;\n  fastcgi_temp_path {p}/fastcgi;\n  proxy_temp_path {p}/proxy;\n\
                 uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n  include {p}/site.conf;\n}}\n"
            ),
        )
        .unwrap();
        let mut procs = Group(Vec::new());
        let mut fcgi = Command::new("/usr/sbin/fcgiwrap");
        fcgi.arg("-s").arg(format!("unix:{}", d.join("fcgiwrap.socket").display())).args(["-c", "4"]);
        procs.spawn(fcgi, &d.join("fcgiwrap.log"));
        wait_until("the fcgiwrap socket", Duration::from_secs(5), || d.join("fcgiwrap.socket").exists());
        let mut nginx = Command::new("/usr/sbin/nginx");
        nginx.arg("-e").arg(d.join("error.log")).arg("-p").arg(d).arg("-c").arg(d.join("nginx.conf"));
        procs.spawn(nginx, &d.join("nginx.out"));
        let addr = format!("{ip}:8181");
        wait_until(&format!("nginx on {addr}"), Duration::from_secs(10), || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
        Nginx { dir, _procs: procs }
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

fn git_dir(repo: &Path, args: &[&str]) -> String {
    let out = run(Command::new("git").arg("--git-dir").arg(repo).args(args).env("GIT_CONFIG_NOSYSTEM", "1"));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A client whose git finds `git-remote-stargate`, configured with `config`.
fn remote_client(config: &str) -> Client {
    let client = Client::new();
    let path = client.home.path().join(".gitconfig");
    let text = std::fs::read_to_string(&path).unwrap() + config;
    std::fs::write(path, text).unwrap();
    client
}

fn rgit(c: &Client, dir: &str, args: &[&str]) -> Command {
    let mut cmd = with_helper(c.git(dir, args));
    cmd.env("GIT_TERMINAL_PROMPT", "0");
    cmd
}

#[test]
fn smart_http_behind_nginx_clone_fetch_push_refusal_and_mirroring() {
    // The nodes' own URLs are the nginx ones: the leader record carries them, and the
    // replicas mirror over http.
    let lab = Lab::up_with(
        2,
        "[stargate \"a\"]\n\turl = http://@NET@.1:8181/\n[stargate \"b\"]\n\turl = http://@NET@.2:8181/\n",
    );
    let servers: Vec<Nginx> =
        lab.nodes.iter().map(|n| Nginx::start(&lab.ip(n), &lab.dir.path().join(n).join("repos"))).collect();
    let leader = lab.wait_leader(None, Duration::from_secs(10));
    let passive = if leader == "a" { "b" } else { "a" };
    assert_eq!(lab.record()["url"], format!("http://{}:8181/", lab.ip(&leader)));
    // Nothing but nginx serves the repositories from here on.
    for n in &lab.nodes {
        lab.kill(n, "daemon", "KILL");
    }

    // git's own credential store answers nginx's 401 on a push.
    let mut config = String::from("[credential]\n\thelper = store\n");
    let mut credentials = String::new();
    for n in &lab.nodes {
        let ip = lab.ip(n);
        config += &format!("[stargate \"{n}\"]\n\turl = http://{ip}:8181/\n\thealth = http://{ip}:8080\n");
        credentials += &format!("http://git:secret@{ip}:8181\n");
    }
    let c = remote_client(&config);
    std::fs::write(c.home.path().join(".git-credentials"), credentials).unwrap();

    ok(rgit(&c, ".", &["init", "-q", "-b", "main", "w"]));
    std::fs::write(c.home.path().join("w/file"), "one\n").unwrap();
    ok(rgit(&c, "w", &["add", "file"]));
    ok(rgit(&c, "w", &["commit", "-q", "-m", "one"]));

    // Pushes need the user: without credentials nginx answers 401.
    let out = run(rgit(&c, "w", &["-c", "credential.helper=", "push", "stargate::a,b/kv.git", "main"]));
    assert!(!out.status.success(), "an anonymous push went through");
    assert!(stderr(&out).contains("could not read Username"), "{}", stderr(&out));

    // push, clone, fetch through stargate:: over http
    ok(rgit(&c, "w", &["push", "-q", "stargate::a,b/kv.git", "main"]));
    let head = ok(rgit(&c, "w", &["rev-parse", "HEAD"])).trim().to_owned();
    assert_eq!(git_dir(&lab.repo(&leader, "kv"), &["rev-parse", "refs/heads/main"]), head);
    ok(rgit(&c, ".", &["clone", "-q", "-b", "main", "stargate::b,a/kv.git", "c"]));
    assert_eq!(ok(rgit(&c, "c", &["rev-parse", "HEAD"])).trim(), head);
    std::fs::write(c.home.path().join("w/file"), "two\n").unwrap();
    ok(rgit(&c, "w", &["commit", "-q", "-am", "two"]));
    ok(rgit(&c, "w", &["push", "-q", "stargate::a,b/kv.git", "main"]));
    let head = ok(rgit(&c, "w", &["rev-parse", "HEAD"])).trim().to_owned();
    ok(rgit(&c, "c", &["fetch", "-q"]));
    assert_eq!(ok(rgit(&c, "c", &["rev-parse", "origin/main"])).trim(), head);

    // The replica mirrors the http leader (its git daemon is gone: only nginx serves).
    lab.wait_until("the replica to mirror over http", Duration::from_secs(20), || {
        git_dir(&lab.repo(passive, "kv"), &["rev-parse", "-q", "--verify", "refs/heads/main"]) == head
    });
    let leader_log = servers[lab.nodes.iter().position(|n| *n == leader).unwrap()].access_log();
    assert!(leader_log.contains("POST /kv.git/git-upload-pack"), "{leader_log}");

    // A push to the passive node: Stargate's refusal reaches the client through nginx.
    for url in [format!("stargate::{passive}/kv.git"), format!("http://{}:8181/kv.git", lab.ip(passive))] {
        std::fs::write(c.home.path().join("w/file"), format!("to {url}\n")).unwrap();
        ok(rgit(&c, "w", &["commit", "-q", "-am", "to the passive"]));
        let out = run(rgit(&c, "w", &["push", &url, "main"]));
        let err = stderr(&out);
        assert!(!out.status.success(), "{url}: {err}");
        assert!(err.contains(&format!("remote: stargate: not leader (leader: {leader}, epoch:")), "{url}: {err}");
        ok(rgit(&c, "w", &["reset", "-q", "--hard", "HEAD~1"]));
    }
    assert_eq!(git_dir(&lab.repo(passive, "kv"), &["rev-parse", "refs/heads/main"]), head);
}
