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
pub(crate) struct Nginx {
    dir: tempfile::TempDir,
    _procs: Group,
}

impl Nginx {
    fn start(ip: &str, repos: &Path) -> Nginx {
        Nginx::start_with(ip, 8181, repos, "stargate-git.conf", &[("listen 80;", format!("listen {ip}:8181;"))])
    }

    /// nginx on `ip:port` with the shipped `contrib/nginx/<site>`, its paths moved into a
    /// temporary directory, and `more` replaced too.
    pub(crate) fn start_with(ip: &str, port: u16, repos: &Path, site: &str, more: &[(&str, String)]) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let shipped = std::fs::read_to_string(repo_root().join("contrib/nginx").join(site)).unwrap();
        let mut replacements = vec![
            ("/run/fcgiwrap.socket", d.join("fcgiwrap.socket").display().to_string()),
            ("/srv/git;", format!("{};", repos.display())),
            ("/etc/nginx/git.htpasswd", d.join("htpasswd").display().to_string()),
        ];
        replacements.extend(more.iter().cloned());
        let site = adapt(&shipped, &format!("contrib/nginx/{site}"), &replacements);
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
        let addr = format!("{ip}:{port}");
        wait_until(&format!("nginx on {addr}"), Duration::from_secs(10), || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
        Nginx { dir, _procs: procs }
    }

    pub(crate) fn access_log(&self) -> String {
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

/// `ssh` for git with `key`, not asking anything.
fn ssh_with(key: &Path) -> String {
    format!(
        "ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
         -o LogLevel=ERROR",
        key.display()
    )
}

fn keygen(path: &Path) {
    let out = run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C"])
        .arg(path.file_name().unwrap())
        .arg("-f")
        .arg(path));
    assert!(out.status.success(), "ssh-keygen: {}", stderr(&out));
}

/// One node's gitolite: installed as `gitolite setup -pk admin.pub` in the node's home with
/// GL_REPO_BASE = the node's stargate.root, behind an sshd on `ip:2222` that uses
/// gitolite's authorized_keys and gives sessions the node's HOME and git config.
struct Gitolite {
    home: std::path::PathBuf,
    sshd: Child,
    _dir: tempfile::TempDir,
}

impl Gitolite {
    fn setup(lab: &Lab, node: &str, admin_pub: &Path) -> Gitolite {
        let home = lab.dir.path().join(node);
        let gitolite = |args: &[&str]| {
            // With the node's configuration, Stargate's hooks included, left out for this one
            // command as contrib/gitolite/README.md says: gitolite commits to gitolite-admin.
            let mut c = cmd("gitolite", &home);
            c.args(args).env("GIT_CONFIG_GLOBAL", home.join("gitconfig")).env("USER", whoami());
            c.env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "core.hooksPath")
                .env("GIT_CONFIG_VALUE_0", "/dev/null");
            c
        };
        std::fs::create_dir_all(home.join(".gitolite/logs")).unwrap();
        let rc = ok(gitolite(&["print-default-rc"]));
        let repos = home.join("repos");
        let rc = adapt(
            &rc,
            "gitolite's default rc",
            &[("%RC = (\n", format!("%RC = (\n    GL_REPO_BASE => '{}',\n", repos.display()))],
        );
        std::fs::write(home.join(".gitolite.rc"), rc).unwrap();
        ok(gitolite(&["setup", "-pk", admin_pub.to_str().unwrap()]));

        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        let (h, ip) = (home.display(), lab.ip(node));
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "ListenAddress {ip}:2222\nHostKey {}/host_key\nAuthorizedKeysFile {h}/.ssh/authorized_keys\nStrictModes no\n\
                 UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nAcceptEnv GIT_PROTOCOL\nPidFile none\nLogLevel ERROR\n\
                 SetEnv HOME={h} GIT_CONFIG_GLOBAL={h}/gitconfig GIT_CONFIG_NOSYSTEM=1 LC_ALL=C TZ=UTC\n",
                d.display()
            ),
        )
        .unwrap();
        let _ = std::fs::create_dir_all("/run/sshd");
        let sshd = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .expect("sshd is installed (Debian: openssh-server)");
        let addr = format!("{ip}:2222");
        wait_until(&format!("sshd on {addr}"), Duration::from_secs(10), || std::net::TcpStream::connect(&addr).is_ok());
        Gitolite { home, sshd, _dir: dir }
    }

    /// contrib/gitolite/stargate-gitolite-follow, run as cron would, with the node's
    /// configuration (Stargate's hooks on).
    fn follow(&self) -> String {
        let script = repo_root().join("contrib/gitolite/stargate-gitolite-follow");
        let mut c = cmd(script.to_str().unwrap(), &self.home);
        c.env("GIT_CONFIG_GLOBAL", self.home.join("gitconfig")).current_dir(&self.home);
        ok(c)
    }
}

impl Drop for Gitolite {
    fn drop(&mut self) {
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
    }
}

fn whoami() -> String {
    ok(Command::new("id").arg("-un")).trim().to_owned()
}

#[test]
fn gitolite_keeps_its_access_rules_behind_stargate_and_replicas_follow_its_configuration() {
    let keys = tempfile::tempdir().unwrap();
    for k in ["admin", "alice", "bob", "replica"] {
        keygen(&keys.path().join(k));
    }
    let user = whoami();
    // Peers and clients reach each node through its gitolite; the agents mirror with the
    // key gitolite knows as `replica`. Stargate's hooks for every repository of the node
    // (core.hooksPath), as with a machine-wide setting.
    let lab = Lab::up_with(
        2,
        &format!(
            "[stargate \"a\"]\n\turl = ssh://{user}@@NET@.1:2222/\n[stargate \"b\"]\n\turl = ssh://{user}@@NET@.2:2222/\n\
             [stargate \"sync\"]\n\tinterval = 1s\n[core]\n\thooksPath = @LAB@/githooks\n\tsshCommand = {}\n",
            ssh_with(&keys.path().join("replica"))
        ),
    );
    let leader = lab.wait_leader(None, Duration::from_secs(10));
    let replica = if leader == "a" { "b" } else { "a" }.to_owned();
    let admin_pub = keys.path().join("admin.pub");
    let servers: Vec<Gitolite> = lab.nodes.iter().map(|n| Gitolite::setup(&lab, n, &admin_pub)).collect();
    let server = |n: &str| &servers[lab.nodes.iter().position(|x| x == n).unwrap()];
    // The replica takes its admin repository from the leader (README: a replica's own
    // first commit would otherwise be kept as lost).
    ok(lab
        .node_cmd(&replica, "git")
        .args(["-c", "core.hooksPath=/dev/null", "--git-dir"])
        .arg(lab.dir.path().join(&replica).join("repos/gitolite-admin.git"))
        .args(["update-ref", "-d", "refs/heads/master"]));

    let mut config = String::new();
    for n in &lab.nodes {
        let ip = lab.ip(n);
        config += &format!("[stargate \"{n}\"]\n\turl = ssh://{user}@{ip}:2222/\n\thealth = http://{ip}:8080\n");
    }
    let c = remote_client(&config);
    let as_user = |who: &str, dir: &str, args: &[&str]| {
        let mut cmd = rgit(&c, dir, args);
        cmd.env("GIT_SSH_COMMAND", ssh_with(&keys.path().join(who)));
        cmd
    };

    // The admin adds the users and a repository through the leader: gitolite's own
    // post-update hook (chained) compiles it there and creates project.git.
    ok(as_user("admin", ".", &["clone", "-q", "stargate::a,b/gitolite-admin.git", "admin"]));
    for k in ["alice", "bob", "replica"] {
        std::fs::copy(keys.path().join(format!("{k}.pub")), c.home.path().join(format!("admin/keydir/{k}.pub")))
            .unwrap();
    }
    let conf = c.home.path().join("admin/conf/gitolite.conf");
    let text = std::fs::read_to_string(&conf).unwrap()
        + "\nrepo project\n    RW+         =   alice\n    RW  dev/    =   bob\n    R           =   bob\n\nrepo @all\n    R           =   replica\n";
    std::fs::write(&conf, text).unwrap();
    ok(as_user("admin", "admin", &["add", "-A"]));
    ok(as_user("admin", "admin", &["commit", "-q", "-m", "project and its users"]));
    ok(as_user("admin", "admin", &["push", "-q", "origin", "master"]));
    let admin_head = ok(as_user("admin", "admin", &["rev-parse", "HEAD"])).trim().to_owned();
    assert!(lab.repo(&leader, "project").join("gl-conf").exists(), "gitolite compiled on the leader");

    // The replica mirrors gitolite-admin over ssh through the leader's gitolite, and its
    // cron job compiles it: project.git and the users' keys appear there too.
    let admin_repo = |n: &str| lab.dir.path().join(n).join("repos/gitolite-admin.git");
    lab.wait_until("the replica to mirror gitolite-admin", Duration::from_secs(30), || {
        git_dir(&admin_repo(&replica), &["rev-parse", "-q", "--verify", "refs/heads/master"]) == admin_head
    });
    let said = server(&replica).follow();
    assert!(said.contains(&admin_head), "{said}");
    assert!(lab.repo(&replica, "project").join("gl-conf").exists(), "gitolite compiled on the replica");
    let keys_there = std::fs::read_to_string(lab.dir.path().join(&replica).join(".ssh/authorized_keys")).unwrap();
    assert!(keys_there.contains("gitolite-shell alice") && keys_there.contains("gitolite-shell bob"), "{keys_there}");

    // Pushes by ssh to the leader, through stargate::, with gitolite's rules enforced by its
    // update hook, which Stargate's hooks chain.
    ok(rgit(&c, ".", &["init", "-q", "-b", "main", "w"]));
    std::fs::write(c.home.path().join("w/file"), "one\n").unwrap();
    ok(rgit(&c, "w", &["add", "file"]));
    ok(rgit(&c, "w", &["commit", "-q", "-m", "one"]));
    let url = "stargate::a,b/project.git";
    ok(as_user("alice", "w", &["push", "-q", url, "main"]));
    let one = ok(rgit(&c, "w", &["rev-parse", "HEAD"])).trim().to_owned();
    assert_eq!(git_dir(&lab.repo(&leader, "project"), &["rev-parse", "refs/heads/main"]), one);
    std::fs::write(c.home.path().join("w/file"), "two\n").unwrap();
    ok(rgit(&c, "w", &["commit", "-q", "-am", "two"]));
    let bob = |target: &str, refspec: &str| run(as_user("bob", "w", &["push", target, refspec]));
    let out = bob(url, "HEAD:refs/heads/main");
    assert!(!out.status.success(), "bob may not write main");
    assert!(stderr(&out).contains("DENIED"), "gitolite's update hook refused: {}", stderr(&out));
    assert_eq!(git_dir(&lab.repo(&leader, "project"), &["rev-parse", "refs/heads/main"]), one);
    let out = bob(url, "HEAD:refs/heads/dev/two");
    assert!(out.status.success(), "bob may write dev/: {}", stderr(&out));
    let two = ok(rgit(&c, "w", &["rev-parse", "HEAD"])).trim().to_owned();

    // The replica mirrors both; a refused ref was never journaled, so it is nowhere.
    lab.wait_until("the replica to mirror project", Duration::from_secs(30), || {
        git_dir(&lab.repo(&replica, "project"), &["rev-parse", "-q", "--verify", "refs/heads/dev/two"]) == two
    });
    assert_eq!(git_dir(&lab.repo(&replica, "project"), &["rev-parse", "refs/heads/main"]), one);

    // A push to the passive node is refused by Stargate, first and alone: not gitolite.
    let passive_url = format!("stargate::{replica}/project.git");
    for who in ["alice", "bob"] {
        let out = run(as_user(who, "w", &["push", &passive_url, "HEAD:refs/heads/main"]));
        let err = stderr(&out);
        assert!(!out.status.success(), "{who}: {err}");
        assert!(err.contains(&format!("stargate: not leader (leader: {leader}, epoch:")), "{who}: {err}");
        assert!(!err.contains("DENIED"), "{who}: {err}");
    }

    // Failover: the replica leads with the configuration it followed.
    lab.kill(&leader, "agent", "KILL");
    let second = lab.wait_leader(Some(&leader), Duration::from_secs(10));
    assert_eq!(second, replica);
    let out = bob(url, "HEAD:refs/heads/main");
    assert!(!out.status.success() && stderr(&out).contains("DENIED"), "{}", stderr(&out));
    let out = run(as_user("alice", "w", &["push", "-v", url, "HEAD:refs/heads/main"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("stargate: writing to {second} ")), "{}", stderr(&out));
    assert_eq!(git_dir(&lab.repo(&second, "project"), &["rev-parse", "refs/heads/main"]), two);
}

/// Regression: with Stargate's hooks set for the whole node (`core.hooksPath` in the
/// configuration every git command reads, as the README installs them), a replica could not
/// create its scratch repository for an http or ssh sync: the passive node refused the new
/// repository's HEAD ("ref updates aborted by hook"), and such a replica never synced.
#[test]
fn a_replica_with_hooks_set_for_the_whole_node_mirrors_over_http() {
    let lab = Lab::up_with(
        2,
        "[stargate \"a\"]\n\turl = http://@NET@.1:8182/\n[stargate \"b\"]\n\turl = http://@NET@.2:8182/\n\
         [core]\n\thooksPath = @LAB@/githooks\n",
    );
    for n in &lab.nodes {
        http_backend(&format!("{}:8182", lab.ip(n)), &lab.dir.path().join(n).join("repos"));
    }
    let leader = lab.wait_leader(None, Duration::from_secs(10));
    let replica = if leader == "a" { "b" } else { "a" };
    let c = Client::new();
    ok(c.git(".", &["init", "-q", "w"]));
    ok(c.git("w", &["commit", "-q", "--allow-empty", "-m", "one"]));
    ok(c.git("w", &["push", "-q", &lab.url(&leader, "kv"), "HEAD:refs/heads/main"]));
    let head = ok(c.git("w", &["rev-parse", "HEAD"])).trim().to_owned();
    lab.wait_until("the replica to mirror over http", Duration::from_secs(20), || {
        git_dir(&lab.repo(replica, "kv"), &["rev-parse", "-q", "--verify", "refs/heads/main"]) == head
    });
}
