//! Encrypted, authenticated replication as operators deploy it (contrib/ssh, contrib/nginx):
//! replicas mirroring over ssh with a dedicated key and strict host-key checking, and over
//! https through nginx asking for client certificates. A replica facing the wrong host key,
//! holding an unauthorized key or the wrong certificate is refused and says why in its log
//! and in `git stargate status`; git daemon is stopped, so nothing else serves.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::servers::Nginx;
use crate::support::*;

fn random_net() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let n = h.finish();
    format!("127.{}.{}", 2 + n % 250, 2 + (n >> 8) % 250)
}

fn keygen(path: &Path) {
    let out = run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(path));
    assert!(out.status.success(), "ssh-keygen: {}", stderr(&out));
}

fn whoami() -> String {
    ok(Command::new("id").arg("-un")).trim().to_owned()
}

/// What the replica's agent says about its last sync of kv.git.
fn last_result(lab: &Lab, node: &str) -> String {
    lab.status(node)["replication"]["repos"]["kv.git"]["last_result"].as_str().unwrap_or_default().to_owned()
}

/// A commit pushed straight into the leader's repository (a local push: the leader's own
/// hooks run, journal and signal included).
fn write(lab: &Lab, leader: &str, c: &Client, n: usize) -> String {
    std::fs::write(c.home.path().join("w/file"), format!("{n}\n")).unwrap();
    ok(c.git("w", &["commit", "-q", "-am", &format!("write {n}")]));
    ok(c.git("w", &["push", "-q", lab.repo(leader, "kv").to_str().unwrap(), "HEAD:refs/heads/main"]));
    ok(c.git("w", &["rev-parse", "HEAD"])).trim().to_owned()
}

fn writer(lab: &Lab, leader: &str) -> Client {
    let c = Client::new();
    ok(c.git(".", &["init", "-q", "w"]));
    std::fs::write(c.home.path().join("w/file"), "0\n").unwrap();
    ok(c.git("w", &["add", "file"]));
    ok(c.git("w", &["commit", "-q", "-m", "first"]));
    ok(c.git("w", &["push", "-q", lab.repo(leader, "kv").to_str().unwrap(), "HEAD:refs/heads/main"]));
    c
}

/// The replica refuses to sync, says `why` in its status, its log and `git stargate
/// status`, and does not get `commit`.
/// Every process of `sshd` (the listener and one per connection) stopped (`STOP`) or
/// continued (`CONT`): a machine that freezes, connections already open included.
fn signal_sshd(sshd: &Sshd, signal: &str) {
    let pid = sshd.pid().to_string();
    let _ = run(Command::new("pkill").args([&format!("-{signal}"), "-P", &pid]));
    ok(Command::new("kill").args([&format!("-{signal}"), &pid]));
}

/// With git daemon stopped (only the transport under test serves), a first write on the
/// leader mirrored by the replica in a protocol v2 session: the leader, the replica, the
/// writer's client and that commit.
fn first_write_mirrored(lab: &Lab) -> (String, &'static str, Client, String) {
    let leader = lab.wait_leader(None, Duration::from_secs(10));
    let replica = if leader == "a" { "b" } else { "a" };
    for n in &lab.nodes {
        lab.kill(n, "daemon", "KILL");
    }
    let c = writer(lab, &leader);
    let commit = write(lab, &leader, &c, 1);
    mirrored(lab, replica, &commit);
    in_a_session(lab, replica);
    (leader, replica, c, commit)
}

/// The replica mirrored in a protocol v2 session: git's fetch, and the side repository it
/// fetches into (`stargate/sync.git`), never used.
fn in_a_session(lab: &Lab, replica: &str) {
    let side = lab.dir.path().join(replica).join("repos/kv.git/stargate/sync.git");
    assert!(!side.exists(), "git's fetch was used{}", lab.logs());
}

fn refused(lab: &Lab, replica: &str, commit: &str, why: &str) {
    lab.wait_until(&format!("{replica} to say '{why}'"), Duration::from_secs(20), || {
        last_result(lab, replica).contains(why)
    });
    assert_ne!(
        lab.rev(replica, "refs/heads/main").as_deref(),
        Some(commit),
        "mirrored despite: {why}\n{}",
        lab.agent_log(replica)
    );
    assert!(lab.agent_log(replica).contains(why), "{}", lab.agent_log(replica));
    let status = ok(lab.node_cmd(replica, "git").args(["stargate", "status"]));
    eprintln!("{replica} refused ({why}):\n{status}");
    assert!(status.contains(why), "{status}");
}

/// The replica mirrors `commit`, and says its last sync went well (published every
/// `stargate.metrics.interval`).
fn mirrored(lab: &Lab, replica: &str, commit: &str) {
    lab.wait_until(&format!("{replica} to mirror {commit}"), Duration::from_secs(20), || {
        lab.rev(replica, "refs/heads/main").as_deref() == Some(commit) && last_result(lab, replica) == "ok"
    });
}

fn set(lab: &Lab, node: &str, key: &str, value: &str) {
    let file = lab.dir.path().join(node).join("gitconfig");
    ok(Command::new("git").arg("config").arg("--file").arg(file).args([key, value]));
}

#[test]
fn replicas_mirror_over_ssh_with_a_dedicated_key_and_strict_host_keys() {
    let net = random_net();
    let ips = [format!("{net}.1"), format!("{net}.2")];
    let sshd = Sshd::start(&ips, 2222);
    let keys = tempfile::tempdir().unwrap();
    let k = keys.path();
    for key in ["replica_key", "stranger_key", "impostor_host_key"] {
        keygen(&k.join(key));
    }
    let host_key = std::fs::read_to_string(sshd.dir.path().join("host_key.pub")).unwrap();
    let known = |key: &str| ips.iter().map(|ip| format!("[{ip}]:2222 {key}")).collect::<String>();
    std::fs::write(k.join("known_hosts"), known(&host_key)).unwrap();
    let ssh = |key: &str| {
        format!(
            "ssh -i {0}/{key} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes \
             -o UserKnownHostsFile={0}/known_hosts -o LogLevel=ERROR",
            k.display()
        )
    };
    let user = whoami();
    let extra = format!(
        "[stargate \"a\"]\n\turl = ssh://{user}@{net}.1:2222@LAB@/a/repos/\n\
         [stargate \"b\"]\n\turl = ssh://{user}@{net}.2:2222@LAB@/b/repos/\n\
         [stargate \"sync\"]\n\tinterval = 2s\n[stargate \"metrics\"]\n\tinterval = 1s\n[core]\n\tsshCommand = {}\n",
        ssh("replica_key")
    );
    let lab = Lab::up_on(2, &net, &extra);
    // The replica key may only fetch below the lab (contrib/ssh/stargate-replica-shell).
    let shell = repo_root().join("contrib/ssh/stargate-replica-shell");
    let replica_pub = std::fs::read_to_string(k.join("replica_key.pub")).unwrap();
    let line = format!("restrict,command=\"{} {}\" {replica_pub}", shell.display(), lab.dir.path().display());
    let authorized = sshd.dir.path().join("authorized_keys");
    std::fs::write(&authorized, std::fs::read_to_string(&authorized).unwrap() + &line).unwrap();
    let (leader, replica, c, _) = first_write_mirrored(&lab);

    // The replica's key cannot push, nor run anything but upload-pack.
    let leader_url =
        format!("ssh://{user}@{}:2222{}/kv.git", lab.ip(&leader), lab.dir.path().join(&leader).join("repos").display());
    let out =
        run(c.git("w", &["push", &leader_url, "HEAD:refs/heads/stolen"]).env("GIT_SSH_COMMAND", ssh("replica_key")));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("stargate-replica-shell: refused 'git-receive-pack"), "{}", stderr(&out));
    assert_eq!(lab.rev(&leader, "refs/heads/stolen"), None);

    // Someone else answers at the leader's address: the host key does not match.
    let impostor = std::fs::read_to_string(k.join("impostor_host_key.pub")).unwrap();
    std::fs::write(k.join("known_hosts"), known(&impostor)).unwrap();
    // ssh checks the host key when a connection opens: the replica's syncs share one
    // (stargate.sync.sshMultiplex), opened to the real server; the next one checks again.
    lab.close_ssh_connections(replica);
    let commit = write(&lab, &leader, &c, 2);
    refused(&lab, replica, &commit, "Host key verification failed");
    std::fs::write(k.join("known_hosts"), known(&host_key)).unwrap();
    mirrored(&lab, replica, &commit);

    // A key the leader's sshd does not know (read at every sync, as git does).
    set(&lab, replica, "core.sshCommand", &ssh("stranger_key"));
    std::thread::sleep(Duration::from_secs(1));
    let commit = write(&lab, &leader, &c, 3);
    refused(&lab, replica, &commit, "Permission denied (publickey)");
    set(&lab, replica, "core.sshCommand", &ssh("replica_key"));
    mirrored(&lab, replica, &commit);
    drop(sshd);
}

/// A CA signing the nodes' server certificate (both addresses) and their client
/// certificates, and another CA signing a stranger's.
fn certificates(dir: &Path, ips: &[String]) {
    let openssl = |args: String| {
        let words: Vec<&str> = args.split_whitespace().collect();
        let out = run(Command::new("openssl").current_dir(dir).args(&words));
        assert!(out.status.success(), "openssl {args}: {}", stderr(&out));
    };
    let san: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
    std::fs::write(
        dir.join("server.cnf"),
        format!("subjectAltName = {}\nextendedKeyUsage = serverAuth\n", san.join(",")),
    )
    .unwrap();
    std::fs::write(dir.join("client.cnf"), "extendedKeyUsage = clientAuth\n").unwrap();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    for ca in ["ca", "other-ca"] {
        openssl(format!("req -x509 {ec} -keyout {ca}.key -out {ca}.pem -days 2 -subj /CN={ca}"));
    }
    for (name, ca, ext) in
        [("server", "ca", "server"), ("a", "ca", "client"), ("b", "ca", "client"), ("stranger", "other-ca", "client")]
    {
        openssl(format!("req {ec} -keyout {name}.key -out {name}.csr -subj /CN={name}"));
        openssl(format!(
            "x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial -out {name}.pem -days 2 -extfile {ext}.cnf"
        ));
    }
}

#[test]
fn replicas_mirror_over_https_with_client_certificates_and_a_wrong_one_is_refused() {
    let net = random_net();
    let ips = [format!("{net}.1"), format!("{net}.2")];
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    certificates(d, &ips);
    let extra = format!(
        "[stargate \"a\"]\n\turl = https://{net}.1:8443/\n[stargate \"b\"]\n\turl = https://{net}.2:8443/\n\
         [stargate \"sync\"]\n\tinterval = 2s\n[stargate \"metrics\"]\n\tinterval = 1s\n\
         [http]\n\tsslCAInfo = {0}/ca.pem\n\tsslCert = {0}/@NODE@.pem\n\tsslKey = {0}/@NODE@.key\n",
        d.display()
    );
    let lab = Lab::up_on(2, &net, &extra);
    let path = |f: &str| d.join(f).display().to_string();
    let _servers: Vec<Nginx> = (lab.nodes.iter())
        .map(|n| {
            let ip = lab.ip(n);
            Nginx::start_with(
                &ip,
                8443,
                &lab.dir.path().join(n).join("repos"),
                "stargate-git-mtls.conf",
                &[
                    ("listen 443 ssl;", format!("listen {ip}:8443 ssl;")),
                    ("/etc/nginx/stargate/server.pem", path("server.pem")),
                    ("/etc/nginx/stargate/server.key", path("server.key")),
                    ("/etc/nginx/stargate/ca.pem", path("ca.pem")),
                ],
            )
        })
        .collect();
    let (leader, replica, c, _) = first_write_mirrored(&lab);

    // Without a certificate nobody gets in, and git shows why.
    let url = format!("https://{}:8443/kv.git", lab.ip(&leader));
    let out = run(c.git("w", &["-c", &format!("http.sslCAInfo={}", path("ca.pem")), "ls-remote", &url]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("client certificate refused: NONE"), "{}", stderr(&out));

    // A certificate from another CA.
    set(&lab, replica, "http.sslCert", &path("stranger.pem"));
    set(&lab, replica, "http.sslKey", &path("stranger.key"));
    // A sync's session reads the settings when it opens: one opened just before (a poll)
    // may still read the next write. Every later one reads them again.
    std::thread::sleep(Duration::from_secs(1));
    let commit = write(&lab, &leader, &c, 2);
    refused(&lab, replica, &commit, "client certificate refused: FAILED");
    set(&lab, replica, "http.sslCert", &path(&format!("{replica}.pem")));
    set(&lab, replica, "http.sslKey", &path(&format!("{replica}.key")));
    mirrored(&lab, replica, &commit);

    // A leader whose certificate the replica does not trust (a man in the middle).
    set(&lab, replica, "http.sslCAInfo", &path("other-ca.pem"));
    std::thread::sleep(Duration::from_secs(1));
    let commit = write(&lab, &leader, &c, 3);
    refused(&lab, replica, &commit, "server certificate verification failed");
    assert!(!last_result(&lab, replica).contains("client certificate refused"));
    set(&lab, replica, "http.sslCAInfo", &path("ca.pem"));
    mirrored(&lab, replica, &commit);
}

/// A leader whose machine stops answering over ssh (its sshd frozen, the connection the
/// replica's syncs share included: the kernel still accepts connections, nothing speaks) is given up by the new leader's catch-up within
/// `stargate.catchup.connectTimeout`, as over `git://`, not after `stargate.catchup.timeout`:
/// the shortfall says the server does not answer, not that the catch-up timed out.
#[test]
fn a_new_leader_gives_up_on_a_silent_ssh_server_within_the_catch_up_connect_timeout() {
    let net = random_net();
    let ips = [format!("{net}.1"), format!("{net}.2")];
    let sshd = Sshd::start(&ips, 2222);
    let user = whoami();
    // As the other transport tests: a 2 s poll and status published every second (defaults
    // 30 s and 10 s), so `mirrored` sees the first write's sync within its wait. The catch-up
    // and its connect timeout, what this test is about, keep their defaults.
    let extra = format!(
        "[stargate \"a\"]\n\turl = ssh://{user}@{net}.1:2222@LAB@/a/repos/\n\
         [stargate \"b\"]\n\turl = ssh://{user}@{net}.2:2222@LAB@/b/repos/\n\
         [stargate \"sync\"]\n\tinterval = 2s\n[stargate \"metrics\"]\n\tinterval = 1s\n[core]\n\tsshCommand = {}\n",
        sshd.ssh_command()
    );
    let lab = Lab::up_on(2, &net, &extra);
    let (leader, replica, _, commit) = first_write_mirrored(&lab);

    lab.kill(&leader, "agent", "KILL");
    signal_sshd(&sshd, "STOP");
    let new = lab.wait_leader(Some(&leader), Duration::from_secs(30));
    signal_sshd(&sshd, "CONT");
    assert_eq!(new, replica);
    let shortfall = (lab.audit().into_iter())
        .find(|e| e["event"] == "catch-up-shortfall" && e["node"] == replica)
        .unwrap_or_else(|| panic!("no shortfall audited: {:?}", lab.audit()));
    let reason = shortfall["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("does not answer") && reason.contains("ssh://"), "{shortfall}{}", lab.logs());
    assert_eq!(lab.rev(replica, "refs/heads/main").as_deref(), Some(commit.as_str()));
}
