//! HTTP basic authentication against bcrypt hashes, as Prometheus exporters do it
//! (exporter-toolkit's `basic_auth_users`).
//!
//! bcrypt is slow on purpose, so each verdict is remembered: a credential (user name and
//! password) is verified once and then answered from memory, right or wrong. Verifications
//! run one at a time on the blocking pool: wrong passwords, however many, keep at most one
//! core busy and never hold up the threads that answer the other requests and the probes.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use prometheus::IntCounter;
use ring::hmac;
use tokio::sync::Semaphore;

/// Verdicts remembered of each kind; past this, the oldest kind of memory is dropped whole.
const REMEMBERED: usize = 1024;

/// A keyed digest of a credential: the remembered verdicts never hold a password, nor
/// anything a dictionary could be run against without the process' random key.
type Fingerprint = [u8; 32];

/// Checks credentials against the configured users.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// The hash an unknown user's password is verified against (the verdict is always
    /// "refused"), so that a wrong user name costs the time a wrong password does.
    decoy: String,
    key: hmac::Key,
    verdicts: Arc<Mutex<Verdicts>>,
    one_at_a_time: Arc<Semaphore>,
    verified: Verified,
}

/// Counters of bcrypt verifications by outcome.
#[derive(Clone)]
pub struct Verified {
    pub admitted: IntCounter,
    pub refused: IntCounter,
}

#[derive(Default)]
struct Verdicts {
    admitted: HashSet<Fingerprint>,
    refused: HashSet<Fingerprint>,
}

impl Verdicts {
    fn get(&self, fingerprint: &Fingerprint) -> Option<bool> {
        if self.admitted.contains(fingerprint) {
            Some(true)
        } else if self.refused.contains(fingerprint) {
            Some(false)
        } else {
            None
        }
    }

    /// Wrong credentials are remembered apart from right ones, so that a flood of wrong
    /// ones never makes a valid scrape pay for a verification again.
    fn remember(&mut self, fingerprint: Fingerprint, admitted: bool) {
        let set = if admitted {
            &mut self.admitted
        } else {
            &mut self.refused
        };
        if set.len() >= REMEMBERED {
            set.clear();
        }
        set.insert(fingerprint);
    }
}

impl BasicAuth {
    /// `None` without users: every request is admitted. The hashes were checked with the
    /// configuration.
    pub fn new(users: BTreeMap<String, String>, verified: Verified) -> Option<BasicAuth> {
        let decoy = users.values().next()?.clone();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new()).ok()?;
        Some(BasicAuth {
            users,
            decoy,
            key,
            verdicts: Arc::default(),
            one_at_a_time: Arc::new(Semaphore::new(1)),
            verified,
        })
    }

    /// Whether `headers` carry the user name and password of a configured user.
    pub async fn admits(&self, headers: &HeaderMap) -> bool {
        let Some((user, password)) = credentials(headers) else {
            return false;
        };
        let fingerprint = self.fingerprint(&user, &password);
        if let Some(verdict) = self.remembered(&fingerprint) {
            return verdict;
        }
        let Ok(permit) = self.one_at_a_time.clone().acquire_owned().await else {
            return false;
        };
        // The same credential may have been verified while this one waited.
        if let Some(verdict) = self.remembered(&fingerprint) {
            return verdict;
        }
        let user_hash = std::str::from_utf8(&user)
            .ok()
            .and_then(|u| self.users.get(u));
        let known = user_hash.is_some();
        let hash = user_hash.unwrap_or(&self.decoy).clone();
        let (verdicts, verified) = (self.verdicts.clone(), self.verified.clone());
        // The permit and the verdict go with the verification: a client that disconnects
        // meanwhile neither lets a second verification start nor wastes this one.
        let verification = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let admitted = known && bcrypt::verify(&password, &hash).unwrap_or(false);
            lock(&verdicts).remember(fingerprint, admitted);
            if admitted {
                verified.admitted.inc();
            } else {
                verified.refused.inc();
            }
            admitted
        });
        verification.await.unwrap_or(false)
    }

    fn remembered(&self, fingerprint: &Fingerprint) -> Option<bool> {
        lock(&self.verdicts).get(fingerprint)
    }

    fn fingerprint(&self, user: &[u8], password: &[u8]) -> Fingerprint {
        let mut context = hmac::Context::with_key(&self.key);
        // The length keeps ("ab", "c") and ("a", "bc") apart.
        context.update(&(user.len() as u64).to_be_bytes());
        context.update(user);
        context.update(password);
        let mut fingerprint = [0; 32];
        fingerprint.copy_from_slice(context.sign().as_ref());
        fingerprint
    }
}

fn lock(verdicts: &Mutex<Verdicts>) -> std::sync::MutexGuard<'_, Verdicts> {
    verdicts.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The user name and password of an `Authorization: Basic` header.
fn credentials(headers: &HeaderMap) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, encoded) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim_ascii()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value.parse().unwrap());
        headers
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        header(&format!(
            "Basic {}",
            STANDARD.encode(format!("{user}:{password}"))
        ))
    }

    fn auth() -> (BasicAuth, Verified) {
        let verified = Verified {
            admitted: IntCounter::new("a", "a").unwrap(),
            refused: IntCounter::new("r", "r").unwrap(),
        };
        let users = BTreeMap::from([
            ("prometheus".to_owned(), bcrypt::hash("s3cret", 4).unwrap()),
            ("grafana".to_owned(), bcrypt::hash("other", 4).unwrap()),
        ]);
        (BasicAuth::new(users, verified.clone()).unwrap(), verified)
    }

    #[tokio::test]
    async fn each_credential_is_verified_once_right_or_wrong() {
        let (auth, verified) = auth();
        for _ in 0..3 {
            assert!(auth.admits(&basic("prometheus", "s3cret")).await);
            assert!(!auth.admits(&basic("prometheus", "guess")).await);
            // Another user's password, and an unknown user with a real password.
            assert!(!auth.admits(&basic("prometheus", "other")).await);
            assert!(!auth.admits(&basic("nobody", "s3cret")).await);
        }
        assert_eq!(verified.admitted.get(), 1);
        assert_eq!(verified.refused.get(), 3);
    }

    #[tokio::test]
    async fn concurrent_requests_with_one_new_credential_verify_it_once() {
        let (auth, verified) = auth();
        let auth = Arc::new(auth);
        let checks: Vec<_> = (0..8)
            .map(|_| {
                let auth = auth.clone();
                tokio::spawn(async move { auth.admits(&basic("grafana", "other")).await })
            })
            .collect();
        for check in checks {
            assert!(check.await.unwrap());
        }
        assert_eq!(verified.admitted.get(), 1);
    }

    #[test]
    fn a_flood_of_wrong_credentials_never_evicts_a_right_one() {
        let mut verdicts = Verdicts::default();
        verdicts.remember([0; 32], true);
        for i in 0..REMEMBERED as u32 + 10 {
            let mut fingerprint = [1; 32];
            fingerprint[..4].copy_from_slice(&i.to_be_bytes());
            verdicts.remember(fingerprint, false);
        }
        assert_eq!(verdicts.get(&[0; 32]), Some(true));
        assert!(verdicts.refused.len() <= REMEMBERED);
    }

    #[tokio::test]
    async fn malformed_headers_are_refused_without_a_verification() {
        let (auth, verified) = auth();
        for value in [
            "Bearer abc",
            "Basic",
            "Basic !!!not-base64",
            &format!("Basic {}", STANDARD.encode("no-colon")),
        ] {
            assert!(!auth.admits(&header(value)).await, "{value}");
        }
        assert!(!auth.admits(&HeaderMap::new()).await);
        assert_eq!(verified.admitted.get() + verified.refused.get(), 0);
        // The scheme is case-insensitive, and the password may hold colons.
        let users = BTreeMap::from([("a".to_owned(), bcrypt::hash("b:c", 4).unwrap())]);
        let auth = BasicAuth::new(users, verified).unwrap();
        let value = format!("bAsIc {}", STANDARD.encode("a:b:c"));
        assert!(auth.admits(&header(&value)).await);
    }
}
