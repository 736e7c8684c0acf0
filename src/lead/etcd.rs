//! A small client of etcd's v3 JSON gateway (`/v3/kv/range`, `/v3/kv/txn`,
//! `/v3/kv/put`, `/v3/kv/deleterange`, `/v3/lease/grant`, `/v3/lease/keepalive`,
//! `/v3/lease/revoke`, `/v3/watch`): keys and values in base64, 64-bit numbers as strings.
//! Blocking HTTP (ureq) with a timeout on every request; the endpoints are tried in turn,
//! starting with the last one that answered. A watch is one streaming POST whose answer
//! is a stream of JSON objects, bounded by its own deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

/// Where the cluster is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// `host:port` of each member.
    pub endpoints: Vec<String>,
    /// The leader key, such as `/stargate/leader`.
    pub key: String,
    pub tls: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No endpoint answered; what each said.
    #[error("etcd: no endpoint answered ({0})")]
    Unreachable(String),
    #[error("etcd: {0}")]
    Refused(String),
    #[error("etcd: unexpected answer: {0}")]
    Answer(String),
}

/// A PEM file given for `etcds://` that cannot be used: the key that names it, and why.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct PemError {
    /// `stargate.etcd.ca`, `stargate.etcd.cert` or `stargate.etcd.key`.
    pub key: &'static str,
    #[source]
    pub problem: PemProblem,
}

#[derive(Debug, thiserror::Error)]
pub enum PemProblem {
    #[error(transparent)]
    Parse(#[from] ureq::Error),
    #[error("no certificate in it")]
    NoCertificate,
    #[error("no private key in it")]
    NoPrivateKey,
}

/// One key as etcd returns it.
#[derive(Debug, Clone)]
pub struct Kv {
    pub value: Vec<u8>,
    pub create_revision: u64,
    pub lease: i64,
}

/// What a watch of one key saw before its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    /// The key was written or deleted (its lease expired or was revoked) at this revision.
    Changed(u64),
    /// Nothing happened to the key.
    Quiet,
    /// etcd ended the watch without an event (compacted past the start, or the member lost
    /// its leader): read the key again.
    Ended,
}

/// TLS material for `etcds://` (PEM files).
#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub ca: Vec<u8>,
    pub cert_and_key: Option<(Vec<u8>, Vec<u8>)>,
}

pub struct Client {
    spec: Spec,
    agent: ureq::Agent,
    /// The endpoint to try first: the last that answered.
    first: AtomicUsize,
}

fn num(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

fn signed(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

impl Client {
    pub fn new(spec: Spec, timeout: Duration, tls: Option<&Tls>) -> Result<Client, PemError> {
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout))
            .http_status_as_error(false);
        if let Some(tls) = tls {
            use ureq::tls::{ClientCert, PemItem, RootCerts, TlsConfig};
            let certs = |key: &'static str, pem: &[u8]| -> Result<Vec<_>, PemError> {
                let bad = |problem| PemError { key, problem };
                let mut out = Vec::new();
                for item in ureq::tls::parse_pem(pem) {
                    if let PemItem::Certificate(c) = item.map_err(|e| bad(e.into()))? {
                        out.push(c);
                    }
                }
                if out.is_empty() { Err(bad(PemProblem::NoCertificate)) } else { Ok(out) }
            };
            let roots = certs("stargate.etcd.ca", &tls.ca)?;
            let mut builder = TlsConfig::builder().root_certs(RootCerts::new_with_certs(&roots));
            if let Some((cert, key)) = &tls.cert_and_key {
                let chain = certs("stargate.etcd.cert", cert)?;
                let key = ureq::tls::parse_pem(key)
                    .find_map(|i| match i {
                        Ok(PemItem::PrivateKey(k)) => Some(k),
                        _ => None,
                    })
                    .ok_or(PemError { key: "stargate.etcd.key", problem: PemProblem::NoPrivateKey })?;
                builder = builder.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
            }
            config = config.tls_config(builder.build());
        }
        Ok(Client { spec, agent: config.build().into(), first: AtomicUsize::new(0) })
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// POST `body` to `path` on the first endpoint that answers.
    fn call(&self, path: &str, body: Value) -> Result<Value, Error> {
        let n = self.spec.endpoints.len();
        let first = self.first.load(Ordering::Relaxed) % n.max(1);
        let scheme = if self.spec.tls { "https" } else { "http" };
        let mut why = Vec::new();
        for i in 0..n {
            let at = (first + i) % n;
            let url = format!("{scheme}://{}{path}", self.spec.endpoints[at]);
            match self.agent.post(&url).send_json(&body) {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    let answer: Value = match response.body_mut().read_json() {
                        Ok(v) => v,
                        Err(e) => {
                            why.push(format!("{}: {e}", self.spec.endpoints[at]));
                            continue;
                        }
                    };
                    if status >= 500 || answer.get("error").is_some() && status == 503 {
                        why.push(format!("{}: HTTP {status}", self.spec.endpoints[at]));
                        continue;
                    }
                    self.first.store(at, Ordering::Relaxed);
                    if let Some(message) = answer.get("message").or_else(|| answer.get("error")) {
                        return Err(Error::Refused(message.as_str().unwrap_or("error").to_owned()));
                    }
                    return Ok(answer);
                }
                Err(e) => why.push(format!("{}: {e}", self.spec.endpoints[at])),
            }
        }
        Err(Error::Unreachable(why.join("; ")))
    }

    fn b64(s: &[u8]) -> String {
        B64.encode(s)
    }

    fn kv(v: &Value) -> Result<Kv, Error> {
        let value = B64
            .decode(v["value"].as_str().unwrap_or(""))
            .map_err(|e| Error::Answer(format!("value is not base64: {e}")))?;
        Ok(Kv { value, create_revision: num(&v["create_revision"]), lease: signed(&v["lease"]) })
    }

    pub fn get(&self, key: &str) -> Result<Option<Kv>, Error> {
        self.get_at(key).map(|(kv, _)| kv)
    }

    /// `key`, and the store's revision when it was read: a key created next gets a later one.
    pub fn get_at(&self, key: &str) -> Result<(Option<Kv>, u64), Error> {
        let answer = self.call("/v3/kv/range", json!({ "key": Self::b64(key.as_bytes()) }))?;
        let kv = answer["kvs"].as_array().and_then(|kvs| kvs.first()).map(Self::kv).transpose()?;
        Ok((kv, num(&answer["header"]["revision"])))
    }

    /// Every key under `prefix`, in key order, values only.
    pub fn list(&self, prefix: &str) -> Result<Vec<Vec<u8>>, Error> {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let body = json!({ "key": Self::b64(prefix.as_bytes()), "range_end": Self::b64(&end), "sort_target": "KEY" });
        let answer = self.call("/v3/kv/range", body)?;
        let kvs = answer["kvs"].as_array().cloned().unwrap_or_default();
        kvs.iter().map(|v| Self::kv(v).map(|k| k.value)).collect()
    }

    pub fn put(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<(), Error> {
        let mut body = json!({ "key": Self::b64(key.as_bytes()), "value": Self::b64(value) });
        if let Some(lease) = lease {
            body["lease"] = json!(lease.to_string());
        }
        self.call("/v3/kv/put", body).map(drop)
    }

    pub fn delete(&self, key: &str) -> Result<(), Error> {
        self.call("/v3/kv/deleterange", json!({ "key": Self::b64(key.as_bytes()) })).map(drop)
    }

    /// Create `key` with `value` bound to `lease` only if it does not exist. `Ok(Ok(rev))`:
    /// created, `rev` its create revision; `Ok(Err(kv))`: it exists, as `kv`.
    pub fn create(&self, key: &str, value: &[u8], lease: i64) -> Result<Result<u64, Option<Kv>>, Error> {
        let k = Self::b64(key.as_bytes());
        let body = json!({
            "compare": [{ "key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0" }],
            "success": [{ "request_put": { "key": k, "value": Self::b64(value), "lease": lease.to_string() } }],
            "failure": [{ "request_range": { "key": k } }],
        });
        let answer = self.call("/v3/kv/txn", body)?;
        if answer["succeeded"].as_bool() == Some(true) {
            return Ok(Ok(num(&answer["header"]["revision"])));
        }
        let existing = answer["responses"][0]["response_range"]["kvs"].as_array().and_then(|a| a.first()).map(Self::kv);
        Ok(Err(existing.transpose()?))
    }

    /// Delete `key` only while its create revision is `revision` (it is still ours).
    pub fn delete_if(&self, key: &str, revision: u64) -> Result<bool, Error> {
        let k = Self::b64(key.as_bytes());
        let body = json!({
            "compare": [{ "key": k, "target": "CREATE", "result": "EQUAL", "create_revision": revision.to_string() }],
            "success": [{ "request_delete_range": { "key": k } }],
        });
        Ok(self.call("/v3/kv/txn", body)?["succeeded"].as_bool() == Some(true))
    }

    /// How many members the spec names.
    pub fn members(&self) -> usize {
        self.spec.endpoints.len()
    }

    /// Watch `key` on member `member` for a write or a deletion at `from` or later, for at
    /// most `within` (etcd's `/v3/watch` through the JSON gateway). The member must have a
    /// raft leader (`hasleader`): one cut off from its cluster's majority ends the watch
    /// instead of keeping it open without events.
    pub fn watch(&self, member: usize, key: &str, from: u64, within: Duration) -> Result<Watched, Error> {
        let endpoint = self.spec.endpoints.get(member).ok_or_else(|| Error::Unreachable("no such member".into()))?;
        let url = format!("{}://{endpoint}/v3/watch", if self.spec.tls { "https" } else { "http" });
        let body =
            json!({ "create_request": { "key": Self::b64(key.as_bytes()), "start_revision": from.to_string() } });
        let started = std::time::Instant::now();
        let sent = self
            .agent
            .post(&url)
            .header("Grpc-Metadata-hasleader", "true")
            .config()
            .timeout_global(Some(within))
            .build()
            .send_json(&body);
        let response = sent.map_err(|e| Error::Unreachable(format!("{endpoint}: {e}")))?;
        if response.status().as_u16() != 200 {
            return Err(Error::Refused(format!("{endpoint}: watch: HTTP {}", response.status().as_u16())));
        }
        let reader = response.into_body().into_reader();
        for message in serde_json::Deserializer::from_reader(reader).into_iter::<Value>() {
            let message = match message {
                Ok(m) => m,
                // The deadline, the stream's end or a broken connection: nothing seen before it.
                Err(_) if started.elapsed() >= within.saturating_sub(Duration::from_millis(50)) => {
                    return Ok(Watched::Quiet);
                }
                Err(e) => return Err(Error::Answer(format!("{endpoint}: watch: {e}"))),
            };
            if let Some(error) = message.get("error") {
                let why = error.get("message").and_then(Value::as_str).unwrap_or("error");
                return Err(Error::Refused(format!("{endpoint}: watch: {why}")));
            }
            let result = &message["result"];
            if let Some(event) = result["events"].as_array().and_then(|e| e.first()) {
                return Ok(Watched::Changed(num(&event["kv"]["mod_revision"]).max(from)));
            }
            if result["canceled"].as_bool() == Some(true) {
                return Ok(Watched::Ended);
            }
        }
        Ok(if started.elapsed() >= within.saturating_sub(Duration::from_millis(50)) {
            Watched::Quiet
        } else {
            Watched::Ended
        })
    }

    pub fn grant(&self, ttl: Duration) -> Result<i64, Error> {
        let answer = self.call("/v3/lease/grant", json!({ "TTL": ttl.as_secs().max(1).to_string() }))?;
        match signed(&answer["ID"]) {
            0 => Err(Error::Answer("lease grant without an ID".into())),
            id => Ok(id),
        }
    }

    /// Renew `lease`; `false` when etcd no longer knows it (expired or revoked).
    pub fn keep_alive(&self, lease: i64) -> Result<bool, Error> {
        let answer = self.call("/v3/lease/keepalive", json!({ "ID": lease.to_string() }))?;
        Ok(num(&answer["result"]["TTL"]) > 0)
    }

    pub fn revoke(&self, lease: i64) -> Result<(), Error> {
        match self.call("/v3/lease/revoke", json!({ "ID": lease.to_string() })) {
            Err(Error::Refused(why)) if why.contains("not found") => Ok(()),
            other => other.map(drop),
        }
    }
}
