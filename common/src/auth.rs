//! Request signing: how a caller proves it holds a secret without sending it.
//!
//! Two kinds of secret sign with the same scheme, HMAC-SHA256:
//! - the **cluster secret**, shared by every meta, data and session server, signs every
//!   server-to-server HTTP request and WebSocket upgrade (key id [`CLUSTER_KEY_ID`]);
//! - an **access key** (key id + secret) of a principal signs a client's `hello` and an
//!   operator's admin calls.
//!
//! A signed HTTP request carries four headers ([`HDR_KEY`], [`HDR_DATE`], [`HDR_NONCE`],
//! [`HDR_SIGNATURE`]); the signature covers the method, path and query, the timestamp, the
//! nonce and a SHA-256 of the body ([`request_message`]). A `hello` carries the same four
//! values in its `auth` field, signed over the client id ([`hello_message`]). A receiver
//! refuses a timestamp more than [`MAX_SKEW_MS`] away from its clock and a nonce it has seen
//! within that window, so a captured request cannot be replayed; the secret itself never
//! crosses the wire. Signatures are compared in constant time.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ErrorCode};

/// Header naming the key that signed the request.
pub const HDR_KEY: &str = "x-registry-key";
/// Header with the signing time, milliseconds since the Unix epoch.
pub const HDR_DATE: &str = "x-registry-date";
/// Header with a random value used once.
pub const HDR_NONCE: &str = "x-registry-nonce";
/// Header with the hex HMAC-SHA256 signature.
pub const HDR_SIGNATURE: &str = "x-registry-signature";

/// The key id under which servers sign with the cluster secret.
pub const CLUSTER_KEY_ID: &str = "cluster";

/// How far a signed timestamp may be from the receiver's clock, either way.
pub const MAX_SKEW_MS: u64 = 5 * 60 * 1000;

/// Shortest secret accepted, in bytes: 128 bits of a random hex or base64 string.
pub const MIN_SECRET_BYTES: usize = 16;

/// Longest key id or nonce accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 128;

type HmacSha256 = Hmac<Sha256>;

/// Why a signature was refused, or a secret could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credential: sign the request (see docs/security.md)")]
    Missing,
    #[error("malformed credential: {0}")]
    Malformed(String),
    #[error("unknown key id `{0}`")]
    UnknownKey(String),
    #[error("the signature does not match")]
    BadSignature,
    #[error("the signed timestamp is {skew_ms} ms away from this server's clock (at most {MAX_SKEW_MS} ms allowed)")]
    Expired { skew_ms: u64 },
    #[error("this nonce was already used")]
    Replayed,
    #[error("this endpoint is for cluster members only")]
    NotMember,
    #[error("this endpoint needs an admin credential")]
    NotAdmin,
    #[error("cannot load a secret: {0}")]
    BadSecret(String),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let code = match e {
            AuthError::NotMember | AuthError::NotAdmin => ErrorCode::Forbidden,
            AuthError::BadSecret(_) => ErrorCode::Internal,
            _ => ErrorCode::Unauthenticated,
        };
        ApiError::new(code, e.to_string())
    }
}

/// A secret's bytes. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    pub fn new(bytes: &[u8]) -> Result<Self, AuthError> {
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(AuthError::BadSecret(format!(
                "a secret must be at least {MIN_SECRET_BYTES} bytes"
            )));
        }
        Ok(Self(bytes.into()))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// A fresh random secret: 32 random bytes as 64 hex characters.
    pub fn generate() -> String {
        random_hex(32)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A key id and its secret: what signs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub key_id: String,
    pub secret: Secret,
}

impl Credential {
    pub fn new(key_id: impl Into<String>, secret: &str) -> Result<Self, AuthError> {
        let key_id = key_id.into();
        check_token("key id", &key_id)?;
        Ok(Self {
            key_id,
            secret: Secret::new(secret.trim().as_bytes())?,
        })
    }

    /// Parses `KEY_ID:SECRET` (the form `registryctl acl key create` prints and key files
    /// hold).
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let text = text.trim();
        let (id, secret) = text
            .split_once(':')
            .ok_or_else(|| AuthError::BadSecret("expected KEY_ID:SECRET".into()))?;
        Self::new(id.trim(), secret)
    }

    /// Reads a `KEY_ID:SECRET` file.
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let text = read_secret_file(path)?;
        Self::parse(&text)
    }

    /// Signs one HTTP request.
    pub fn sign_request(&self, method: &str, path_and_query: &str, body: &[u8]) -> SignedHeaders {
        let timestamp_ms = crate::time::now_ms();
        let nonce = random_hex(16);
        let message = request_message(
            &self.key_id,
            method,
            path_and_query,
            timestamp_ms,
            &nonce,
            body,
        );
        SignedHeaders {
            key_id: self.key_id.clone(),
            timestamp_ms,
            nonce,
            signature: sign(&self.secret, &message),
        }
    }

    /// Signs a `hello` for `client_id`.
    pub fn sign_hello(&self, client_id: &str) -> HelloAuth {
        let timestamp_ms = crate::time::now_ms();
        let nonce = random_hex(16);
        let message = hello_message(&self.key_id, client_id, timestamp_ms, &nonce);
        HelloAuth {
            key_id: self.key_id.clone(),
            timestamp_ms,
            nonce,
            signature: sign(&self.secret, &message),
        }
    }
}

/// The cluster secret: the one every server signs with, and every secret it accepts (during
/// a rotation the file holds the new secret on its first line and the old one on the
/// second).
#[derive(Clone, Debug)]
pub struct ClusterSecret {
    /// Signs this server's requests.
    pub signing: Credential,
    /// Every secret accepted from peers, the signing one first.
    pub accepted: Vec<Secret>,
}

impl ClusterSecret {
    /// Parses the lines of a cluster secret file (blank lines and `#` comments skipped; at
    /// most two secrets).
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if lines.is_empty() || lines.len() > 2 {
            return Err(AuthError::BadSecret(
                "a cluster secret file holds one secret, or two while rotating".into(),
            ));
        }
        let accepted = lines
            .iter()
            .map(|l| Secret::new(l.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            signing: Credential {
                key_id: CLUSTER_KEY_ID.into(),
                secret: accepted[0].clone(),
            },
            accepted,
        })
    }

    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        Self::parse(&read_secret_file(path)?)
    }

    /// Seals `plaintext` (an access key's secret on its way from the meta cluster to the
    /// other servers) so that only holders of the cluster secret can read it: AES-256-GCM
    /// under a key derived from the signing secret, a random nonce, `SEALED_PREFIX` + hex.
    pub fn seal(&self, plaintext: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let mut data = plaintext.as_bytes().to_vec();
        let sealed = seal_key(&self.signing.secret).seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(SEAL_AAD),
            &mut data,
        );
        match sealed {
            Ok(()) => format!("{SEALED_PREFIX}{}{}", hex::encode(nonce), hex::encode(data)),
            // Sealing a short string cannot fail; refuse to hand anything out if it does.
            Err(_) => String::new(),
        }
    }

    /// Opens what [`ClusterSecret::seal`] sealed, with any accepted secret (so a rotation
    /// does not lose keys).
    pub fn open(&self, sealed: &str) -> Result<String, AuthError> {
        let bad = || AuthError::Malformed("not a sealed secret".into());
        let raw =
            hex::decode(sealed.strip_prefix(SEALED_PREFIX).ok_or_else(bad)?).map_err(|_| bad())?;
        if raw.len() < NONCE_LEN {
            return Err(bad());
        }
        let (nonce, data) = raw.split_at(NONCE_LEN);
        for secret in &self.accepted {
            let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad())?;
            let mut data = data.to_vec();
            if let Ok(plain) = seal_key(secret).open_in_place(nonce, Aad::from(SEAL_AAD), &mut data)
            {
                return String::from_utf8(plain.to_vec()).map_err(|_| bad());
            }
        }
        Err(AuthError::BadSignature)
    }
}

/// Marks a sealed secret.
pub const SEALED_PREFIX: &str = "sealed:v1:";

const SEAL_AAD: &[u8] = b"registry access key";
const NONCE_LEN: usize = 12;

/// The AES-256-GCM key derived from a cluster secret (HMAC-SHA256 as the derivation).
fn seal_key(secret: &Secret) -> LessSafeKey {
    let derived = mac(secret, "REGISTRY-SEAL-V1").finalize().into_bytes();
    match UnboundKey::new(&AES_256_GCM, &derived) {
        Ok(key) => LessSafeKey::new(key),
        Err(_) => unreachable!("a SHA-256 output is an AES-256 key"),
    }
}

fn read_secret_file(path: &Path) -> Result<String, AuthError> {
    std::fs::read_to_string(path)
        .map_err(|e| AuthError::BadSecret(format!("cannot read {}: {e}", path.display())))
}

/// The four values that prove a request was signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHeaders {
    pub key_id: String,
    pub timestamp_ms: u64,
    pub nonce: String,
    pub signature: String,
}

impl SignedHeaders {
    /// As `(header name, value)` pairs.
    pub fn pairs(&self) -> [(&'static str, String); 4] {
        [
            (HDR_KEY, self.key_id.clone()),
            (HDR_DATE, self.timestamp_ms.to_string()),
            (HDR_NONCE, self.nonce.clone()),
            (HDR_SIGNATURE, self.signature.clone()),
        ]
    }

    /// Reads the four headers through `get`; `Ok(None)` when the request carries none.
    pub fn from_headers<'a>(
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Option<Self>, AuthError> {
        let Some(key_id) = get(HDR_KEY) else {
            return Ok(None);
        };
        let field = |name: &str| {
            get(name).ok_or_else(|| AuthError::Malformed(format!("header {name} is missing")))
        };
        let timestamp_ms = field(HDR_DATE)?
            .parse()
            .map_err(|_| AuthError::Malformed(format!("{HDR_DATE} is not a number")))?;
        let out = Self {
            key_id: key_id.to_owned(),
            timestamp_ms,
            nonce: field(HDR_NONCE)?.to_owned(),
            signature: field(HDR_SIGNATURE)?.to_owned(),
        };
        check_token("key id", &out.key_id)?;
        check_token("nonce", &out.nonce)?;
        Ok(Some(out))
    }
}

/// The `auth` field of a `hello`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelloAuth {
    pub key_id: String,
    pub timestamp_ms: u64,
    pub nonce: String,
    /// Hex HMAC-SHA256 of [`hello_message`].
    pub signature: String,
}

/// What a signed HTTP request's signature covers.
pub fn request_message(
    key_id: &str,
    method: &str,
    path_and_query: &str,
    timestamp_ms: u64,
    nonce: &str,
    body: &[u8],
) -> String {
    let body_hash = hex::encode(Sha256::digest(body));
    format!(
        "REGISTRY-HMAC-SHA256\n{key_id}\n{}\n{path_and_query}\n{timestamp_ms}\n{nonce}\n{body_hash}",
        method.to_ascii_uppercase()
    )
}

/// What a `hello` signature covers.
pub fn hello_message(key_id: &str, client_id: &str, timestamp_ms: u64, nonce: &str) -> String {
    format!("REGISTRY-HELLO\n{key_id}\n{client_id}\n{timestamp_ms}\n{nonce}")
}

/// Hex HMAC-SHA256 of `message` under `secret`.
pub fn sign(secret: &Secret, message: &str) -> String {
    hex::encode(mac(secret, message).finalize().into_bytes())
}

/// Whether `signature_hex` is the HMAC of `message` under `secret` (constant time).
pub fn verify(secret: &Secret, message: &str, signature_hex: &str) -> bool {
    match hex::decode(signature_hex) {
        Ok(sig) => mac(secret, message).verify_slice(&sig).is_ok(),
        Err(_) => false,
    }
}

fn mac(secret: &Secret, message: &str) -> HmacSha256 {
    // HMAC takes a key of any length; this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.expose())
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(message.as_bytes());
    mac
}

/// Refuses a timestamp too far from `now_ms`.
pub fn check_skew(timestamp_ms: u64, now_ms: u64) -> Result<(), AuthError> {
    let skew_ms = timestamp_ms.abs_diff(now_ms);
    if skew_ms > MAX_SKEW_MS {
        return Err(AuthError::Expired { skew_ms });
    }
    Ok(())
}

fn check_token(what: &str, value: &str) -> Result<(), AuthError> {
    if value.is_empty() || value.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed(format!(
            "{what} must be 1..={MAX_TOKEN_BYTES} bytes"
        )));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(AuthError::Malformed(format!(
            "{what} may hold only letters, digits, `-`, `_` and `.`"
        )));
    }
    Ok(())
}

/// `bytes` random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred() -> Credential {
        Credential::parse("app1:0123456789abcdef0123456789abcdef").unwrap()
    }

    #[test]
    fn request_signature_covers_every_part() {
        let c = cred();
        let h = c.sign_request("post", "/data/v1/write?x=1", b"{}");
        let msg = |m: &str, p: &str, b: &[u8]| {
            request_message(&h.key_id, m, p, h.timestamp_ms, &h.nonce, b)
        };
        assert!(verify(
            &c.secret,
            &msg("POST", "/data/v1/write?x=1", b"{}"),
            &h.signature
        ));
        assert!(!verify(
            &c.secret,
            &msg("GET", "/data/v1/write?x=1", b"{}"),
            &h.signature
        ));
        assert!(!verify(
            &c.secret,
            &msg("POST", "/data/v1/write?x=2", b"{}"),
            &h.signature
        ));
        assert!(!verify(
            &c.secret,
            &msg("POST", "/data/v1/write?x=1", b"{ }"),
            &h.signature
        ));
        let other = Credential::parse("app1:fedcba9876543210fedcba9876543210").unwrap();
        assert!(!verify(
            &other.secret,
            &msg("POST", "/data/v1/write?x=1", b"{}"),
            &h.signature
        ));
        assert!(!verify(&c.secret, "x", "not hex"));
    }

    #[test]
    fn headers_round_trip_and_bad_values_are_refused() {
        let h = cred().sign_request("GET", "/", b"");
        let pairs = h.pairs();
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(SignedHeaders::from_headers(get).unwrap(), Some(h));
        assert_eq!(SignedHeaders::from_headers(|_| None).unwrap(), None);
        let bad = |name: &str| match name {
            HDR_KEY => Some("a b"),
            _ => Some("1"),
        };
        assert!(matches!(
            SignedHeaders::from_headers(bad),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        assert!(Credential::parse("k:short").is_err());
        assert!(Credential::parse("no-colon").is_err());
        assert!(!format!("{:?}", cred()).contains("0123"));
        let two =
            ClusterSecret::parse("# new\nAAAAAAAAAAAAAAAAAAAA\nBBBBBBBBBBBBBBBBBBBB\n").unwrap();
        assert_eq!(two.accepted.len(), 2);
        assert_eq!(two.signing.secret.expose(), b"AAAAAAAAAAAAAAAAAAAA");
        assert!(ClusterSecret::parse("").is_err());
        assert!(
            ClusterSecret::parse("AAAAAAAAAAAAAAAAAAAA\nB...............\nC...............")
                .is_err()
        );
    }

    #[test]
    fn skew_window() {
        assert!(check_skew(1_000_000, 1_000_000 + MAX_SKEW_MS).is_ok());
        assert!(check_skew(1_000_000, 1_000_001 + MAX_SKEW_MS).is_err());
        assert!(check_skew(1_000_001 + MAX_SKEW_MS, 1_000_000).is_err());
    }

    #[test]
    fn sealed_secrets_open_only_with_the_cluster_secret() {
        let old = "0123456789abcdef0123456789abcdef";
        let new = "fedcba9876543210fedcba9876543210";
        let cluster = ClusterSecret::parse(old).unwrap();
        let sealed = cluster.seal("the access key secret");
        assert!(sealed.starts_with(SEALED_PREFIX));
        assert!(!sealed.contains("access"));
        assert_ne!(
            sealed,
            cluster.seal("the access key secret"),
            "nonce reused"
        );
        assert_eq!(cluster.open(&sealed).unwrap(), "the access key secret");
        // During a rotation (new secret first, old second) what the old one sealed opens.
        let rotating = ClusterSecret::parse(&format!("{new}\n{old}")).unwrap();
        assert_eq!(rotating.open(&sealed).unwrap(), "the access key secret");
        let other = ClusterSecret::parse(new).unwrap();
        assert_eq!(other.open(&sealed), Err(AuthError::BadSignature));
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('0') { '1' } else { '0' });
        assert!(cluster.open(&tampered).is_err());
        assert!(cluster.open("plain").is_err());
        assert!(cluster.open("sealed:v1:zz").is_err());
    }
}
