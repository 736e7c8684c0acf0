//! Retry policy of a failed sync: exponential backoff with full jitter,
//! `delay = random(0, min(maxDelay, baseDelay · multiplier^n))`, and which failures are
//! worth retrying at all (transient ones; authentication, 4xx and missing repositories
//! fail fast).

use std::time::Duration;

use crate::config::{self, Config};
use crate::wire::git::{self, ErrorClass};

const CLASSES: [&str; 5] = ["timeout", "connection", "eof", "http5xx", "transport"];

#[derive(Debug, Clone)]
pub struct Policy {
    pub attempts: u32,
    pub base: Duration,
    pub multiplier: f64,
    pub max: Duration,
    /// Class names and, for anything else, text to look for in git's error output.
    pub retryable: Vec<String>,
}

impl Policy {
    pub fn from_config(cfg: &Config) -> Result<Policy, config::Error> {
        Ok(Policy {
            attempts: cfg.retry_attempts()?,
            base: cfg.retry_base_delay()?,
            multiplier: cfg.retry_multiplier()?,
            max: cfg.retry_max_delay()?,
            retryable: cfg.retry_retryable(),
        })
    }

    /// The upper bound of the delay before retry `n` (0 for the first retry).
    pub fn ceiling(&self, n: u32) -> Duration {
        let grown = self.base.as_secs_f64() * self.multiplier.powi(n.min(1000) as i32);
        Duration::from_secs_f64(grown.min(self.max.as_secs_f64()))
    }

    /// Full jitter: uniformly random in `[0, ceiling(n)]`.
    pub fn delay(&self, n: u32) -> Duration {
        let ceiling = self.ceiling(n).as_millis() as u64;
        Duration::from_millis(rand::random_range(0..=ceiling))
    }

    pub fn is_retryable(&self, err: &git::Error) -> bool {
        let class = err.class();
        if class != ErrorClass::Permanent && self.retryable.iter().any(|r| r == class.name()) {
            return true;
        }
        let text = err.text().to_lowercase();
        self.retryable.iter().filter(|r| !CLASSES.contains(&r.as_str())).any(|p| text.contains(&p.to_lowercase()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            attempts: 5,
            base: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(60),
            retryable: CLASSES.map(String::from).to_vec(),
        }
    }

    #[test]
    fn ceilings_grow_then_cap() {
        let p = policy();
        let secs: Vec<u64> = (0..8).map(|n| p.ceiling(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60]);
        for n in 0..8 {
            for _ in 0..50 {
                assert!(p.delay(n) <= p.ceiling(n));
            }
        }
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let failed =
            |stderr: &str| git::Error::Failed { args: "fetch".into(), status: "1".into(), stderr: stderr.into() };
        let p = policy();
        assert!(p.is_retryable(&failed("fatal: unable to connect to 127.0.0.1:\\nConnection refused")));
        assert!(p.is_retryable(&failed("fatal: early EOF")));
        assert!(p.is_retryable(&failed("Killed")), "the serving process died");
        assert!(p.is_retryable(&git::Error::Timeout { args: "fetch".into() }));
        assert!(!p.is_retryable(&failed("fatal: Authentication failed for 'https://x/'")));
        assert!(
            !p.is_retryable(&failed("fatal: repository 'x' not found\\nfatal: the remote end hung up unexpectedly"))
        );
        assert!(!p.is_retryable(&failed("error: The requested URL returned error: 403")));
        let custom = Policy { retryable: vec!["timeout".into(), "Too many open files".into()], ..policy() };
        assert!(!custom.is_retryable(&failed("fatal: early EOF")));
        assert!(custom.is_retryable(&failed("fatal: too many open files")));
    }
}
