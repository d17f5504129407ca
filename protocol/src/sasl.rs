//! SASL as Kafka speaks it: PLAIN (RFC 4616) and SCRAM-SHA-256/512
//! (RFC 5802, RFC 7677), both sides of each exchange. The broker holds
//! [`ScramCredential`]s (salt, iteration count, stored key, server key: never
//! the password, nor anything a client could log in with); the client holds
//! the password.
//!
//! Pure message logic: nothing here reads a socket or a clock. The broker
//! and the client carry the messages in SaslAuthenticate requests.
//!
//! Architecture invariant: every comparison of a secret-derived value is
//! constant-time, and a user the broker does not know goes through the same
//! exchange (with a credential no password matches) as one it knows, so
//! the answers never tell whether a user exists.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::rand::SecureRandom;
use ring::{digest, hmac, pbkdf2};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// Kafka's bounds on a SCRAM credential's iteration count.
pub const SCRAM_ITERATIONS_MIN: u32 = 4096;
pub const SCRAM_ITERATIONS_MAX: u32 = 16384;
/// Bytes of salt a new credential gets.
const SALT_BYTES: usize = 32;
/// Bytes of randomness in a nonce (before base64).
const NONCE_BYTES: usize = 24;

/// A SASL mechanism a listener can offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    Plain,
    Scram(ScramMechanism),
}

impl Mechanism {
    pub const ALL: [Mechanism; 3] = [
        Mechanism::Scram(ScramMechanism::Sha512),
        Mechanism::Scram(ScramMechanism::Sha256),
        Mechanism::Plain,
    ];

    /// The name clients ask for (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`).
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(scram) => scram.name(),
        }
    }

    /// The mechanism called `name` (case-insensitive), if Strata has it.
    pub fn parse(name: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|mechanism| mechanism.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The two SCRAM mechanisms, with Kafka's numbers for them
/// (DescribeUserScramCredentials, AlterUserScramCredentials).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// Kafka's `ScramMechanism` type: 1 for SHA-256, 2 for SHA-512.
    pub fn kafka_type(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_type(kafka_type: i8) -> Option<ScramMechanism> {
        match kafka_type {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramMechanism::Sha256 => hmac::HMAC_SHA256,
            ScramMechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramMechanism::Sha256 => &digest::SHA256,
            ScramMechanism::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn output_bytes(self) -> usize {
        self.digest().output_len()
    }
}

/// What the broker keeps of a user's password for one SCRAM mechanism.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`: checks a client's proof.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`: proves the broker knew it.
    pub server_key: Vec<u8>,
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// The credential of `password` with a fresh random salt.
    pub fn from_password(mechanism: ScramMechanism, password: &str, iterations: u32) -> Self {
        let salt = random_bytes(SALT_BYTES);
        let salted = salted_password(mechanism, password, &salt, iterations);
        ScramCredential::from_salted_password(mechanism, salt, iterations, &salted)
    }

    /// The credential of a salted password (what AlterUserScramCredentials
    /// carries: the client salts, the password never travels).
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salt: Vec<u8>,
        iterations: u32,
        salted_password: &[u8],
    ) -> Self {
        let client_key = hmac_of(mechanism, salted_password, b"Client Key");
        ScramCredential {
            salt,
            iterations,
            stored_key: digest::digest(mechanism.digest(), &client_key)
                .as_ref()
                .to_vec(),
            server_key: hmac_of(mechanism, salted_password, b"Server Key"),
        }
    }

    /// Whether `password` is the one this credential was made from
    /// (PLAIN logins are checked against the SCRAM credentials).
    pub fn matches_password(&self, mechanism: ScramMechanism, password: &str) -> bool {
        let salted = salted_password(mechanism, password, &self.salt, self.iterations);
        let candidate =
            ScramCredential::from_salted_password(mechanism, Vec::new(), self.iterations, &salted);
        bool::from(candidate.stored_key.ct_eq(&self.stored_key))
    }
}

/// `Hi(password, salt, iterations)`: PBKDF2 with the mechanism's HMAC.
pub fn salted_password(
    mechanism: ScramMechanism,
    password: &str,
    salt: &[u8],
    iterations: u32,
) -> Vec<u8> {
    let mut out = vec![0; mechanism.output_bytes()];
    let iterations = NonZeroU32::new(iterations.max(1)).expect("at least one iteration");
    pbkdf2::derive(
        mechanism.pbkdf2(),
        iterations,
        salt,
        password.as_bytes(),
        &mut out,
    );
    out
}

/// Fresh random bytes (the salt of a new credential, a nonce).
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    bytes
}

fn hmac_of(mechanism: ScramMechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(mechanism.hmac(), key), data)
        .as_ref()
        .to_vec()
}

fn nonce() -> String {
    BASE64.encode(random_bytes(NONCE_BYTES))
}

/// Why an exchange failed. `InvalidCredentials` is all a client learns of a
/// wrong password or an unknown user.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SaslError {
    #[error("authentication failed: invalid credentials")]
    InvalidCredentials,
    #[error("malformed SASL message: {0}")]
    Malformed(String),
    #[error("SASL message out of turn: {0}")]
    OutOfTurn(&'static str),
    #[error("the broker's SCRAM answer does not check out: {0}")]
    ServerNotVerified(String),
    #[error("the broker refused: {0}")]
    Refused(String),
}

/// A PLAIN message: `authzid NUL user NUL password` (RFC 4616).
pub fn plain_message(user: &str, password: &str) -> Vec<u8> {
    format!("\0{user}\0{password}").into_bytes()
}

/// The user and password of a PLAIN message. An authorization id other
/// than empty or the user itself is refused (no impersonation).
pub fn parse_plain(message: &[u8]) -> Result<(String, String), SaslError> {
    let text = std::str::from_utf8(message)
        .map_err(|error| SaslError::Malformed(format!("PLAIN message is not UTF-8: {error}")))?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed(
            "PLAIN message is not authzid NUL user NUL password".to_string(),
        ));
    };
    if user.is_empty() {
        return Err(SaslError::Malformed("PLAIN message names no user".into()));
    }
    if !authzid.is_empty() && authzid != user {
        return Err(SaslError::InvalidCredentials);
    }
    Ok((user.to_string(), password.to_string()))
}

/// `,` and `=` in a SCRAM user name travel as `=2C` and `=3D`.
fn escape_user(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

fn unescape_user(escaped: &str) -> Result<String, SaslError> {
    let mut out = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => {
                return Err(SaslError::Malformed(format!(
                    "user name '{escaped}' has a bad escape"
                )))
            }
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The `key=value` attributes of a SCRAM message, in order.
fn attributes(message: &str) -> Result<Vec<(char, &str)>, SaslError> {
    message
        .split(',')
        .map(|attribute| {
            let mut chars = attribute.chars();
            match (chars.next(), chars.next()) {
                (Some(key), Some('=')) if key.is_ascii_alphabetic() => Ok((key, &attribute[2..])),
                _ => Err(SaslError::Malformed(format!(
                    "'{attribute}' is not a SCRAM attribute"
                ))),
            }
        })
        .collect()
}

fn attribute<'a>(
    attributes: &[(char, &'a str)],
    key: char,
    message: &str,
) -> Result<&'a str, SaslError> {
    attributes
        .iter()
        .find(|(name, _)| *name == key)
        .map(|(_, value)| *value)
        .ok_or_else(|| SaslError::Malformed(format!("'{message}' has no '{key}=' attribute")))
}

fn utf8(message: &[u8]) -> Result<&str, SaslError> {
    std::str::from_utf8(message)
        .map_err(|error| SaslError::Malformed(format!("SCRAM message is not UTF-8: {error}")))
}

fn base64_decode(value: &str, what: &str) -> Result<Vec<u8>, SaslError> {
    BASE64
        .decode(value)
        .map_err(|error| SaslError::Malformed(format!("{what} is not base64: {error}")))
}

/// The broker's side of one SCRAM exchange: client-first → server-first,
/// client-final → server-final.
pub struct ScramServer {
    mechanism: ScramMechanism,
    stage: ServerStage,
}

enum ServerStage {
    AwaitingClientFirst,
    AwaitingClientFinal {
        user: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
        credential: ScramCredential,
    },
    Done,
}

impl ScramServer {
    pub fn new(mechanism: ScramMechanism) -> Self {
        ScramServer {
            mechanism,
            stage: ServerStage::AwaitingClientFirst,
        }
    }

    pub fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    /// True until the client-first message arrived.
    pub fn awaiting_client_first(&self) -> bool {
        matches!(self.stage, ServerStage::AwaitingClientFirst)
    }

    /// Reads the client-first message and answers the server-first.
    /// `credential` looks up the user's credential for this mechanism.
    pub fn client_first(
        &mut self,
        message: &[u8],
        credential: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<Vec<u8>, SaslError> {
        if !matches!(self.stage, ServerStage::AwaitingClientFirst) {
            return Err(SaslError::OutOfTurn("a second client-first message"));
        }
        self.stage = ServerStage::Done;
        let message = utf8(message)?;
        // gs2-header: no channel binding ("n"), no authorization identity.
        let Some(bare) = message.strip_prefix("n,,") else {
            return Err(SaslError::Malformed(format!(
                "client-first '{message}' must start with 'n,,' (no channel binding, no authzid)"
            )));
        };
        let parsed = attributes(bare)?;
        let user = unescape_user(attribute(&parsed, 'n', bare)?)?;
        let client_nonce = attribute(&parsed, 'r', bare)?;
        if client_nonce.is_empty() || parsed.first().map(|(key, _)| *key) != Some('n') {
            return Err(SaslError::Malformed(format!(
                "client-first '{bare}' must be n=USER,r=NONCE"
            )));
        }
        // Delegation tokens are a Kafka extension Strata does not have.
        if parsed
            .iter()
            .any(|(key, value)| *key == 't' && value.starts_with("okenauth"))
        {
            return Err(SaslError::InvalidCredentials);
        }
        let credential = credential(&user).unwrap_or_else(|| unknown_user(self.mechanism, &user));
        let nonce = format!("{client_nonce}{}", self::nonce());
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        self.stage = ServerStage::AwaitingClientFinal {
            user,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
            credential,
        };
        Ok(server_first.into_bytes())
    }

    /// Checks the client-final message's proof: the user it authenticates
    /// and the server-final message that proves the broker to the client.
    pub fn client_final(&mut self, message: &[u8]) -> Result<(String, Vec<u8>), SaslError> {
        let ServerStage::AwaitingClientFinal {
            user,
            client_first_bare,
            server_first,
            nonce,
            credential,
        } = std::mem::replace(&mut self.stage, ServerStage::Done)
        else {
            return Err(SaslError::OutOfTurn("a client-final message"));
        };
        let message = utf8(message)?;
        let Some((without_proof, proof)) = message.rsplit_once(",p=") else {
            return Err(SaslError::Malformed(format!(
                "client-final '{message}' has no proof"
            )));
        };
        let parsed = attributes(without_proof)?;
        if attribute(&parsed, 'c', without_proof)? != "biws" {
            // "biws" is base64 of "n,,": the gs2 header client-first had.
            return Err(SaslError::Malformed(
                "client-final's channel binding is not 'n,,'".to_string(),
            ));
        }
        // Kafka accepts a nonce that ends with the one it sent, and
        // librdkafka before 2.1 sends the client's part twice; the proof
        // signs whatever was sent, and our fresh part must be in it.
        if !attribute(&parsed, 'r', without_proof)?.ends_with(&nonce) {
            return Err(SaslError::InvalidCredentials);
        }
        let proof = base64_decode(proof, "the client proof")?;
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac_of(
            self.mechanism,
            &credential.stored_key,
            auth_message.as_bytes(),
        );
        if proof.len() != signature.len() {
            return Err(SaslError::InvalidCredentials);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        let stored_key = digest::digest(self.mechanism.digest(), &client_key);
        if !bool::from(stored_key.as_ref().ct_eq(&credential.stored_key)) {
            return Err(SaslError::InvalidCredentials);
        }
        let server_signature = hmac_of(
            self.mechanism,
            &credential.server_key,
            auth_message.as_bytes(),
        );
        Ok((
            user,
            format!("v={}", BASE64.encode(server_signature)).into_bytes(),
        ))
    }
}

/// A credential for a user that does not exist: its salt is the same every
/// time for the same name (so repeated attempts look like a real user's) and
/// its keys match no password.
fn unknown_user(mechanism: ScramMechanism, user: &str) -> ScramCredential {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    let key = KEY.get_or_init(|| random_bytes(32));
    let salt = hmac_of(ScramMechanism::Sha256, key, user.as_bytes());
    ScramCredential {
        salt,
        iterations: SCRAM_ITERATIONS_MIN,
        stored_key: random_bytes(mechanism.output_bytes()),
        server_key: random_bytes(mechanism.output_bytes()),
    }
}

/// The client's side of one SCRAM exchange.
pub struct ScramClient {
    mechanism: ScramMechanism,
    password: String,
    client_first_bare: String,
    client_nonce: String,
    /// The signature the broker must send back, once client-final is built.
    expected_server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    pub fn new(mechanism: ScramMechanism, user: &str, password: &str) -> Self {
        Self::with_nonce(mechanism, user, password, nonce())
    }

    fn with_nonce(mechanism: ScramMechanism, user: &str, password: &str, nonce: String) -> Self {
        ScramClient {
            mechanism,
            password: password.to_string(),
            client_first_bare: format!("n={},r={nonce}", escape_user(user)),
            client_nonce: nonce,
            expected_server_signature: None,
        }
    }

    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Reads the server-first message and builds the client-final one.
    pub fn server_first(&mut self, message: &[u8]) -> Result<Vec<u8>, SaslError> {
        let server_first = utf8(message)?;
        let parsed = attributes(server_first)?;
        if let Ok(error) = attribute(&parsed, 'e', server_first) {
            return Err(SaslError::Refused(error.to_string()));
        }
        let nonce = attribute(&parsed, 'r', server_first)?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(SaslError::ServerNotVerified(
                "its nonce does not extend ours".to_string(),
            ));
        }
        let salt = base64_decode(attribute(&parsed, 's', server_first)?, "the salt")?;
        let iterations: u32 = attribute(&parsed, 'i', server_first)?
            .parse()
            .map_err(|error| SaslError::Malformed(format!("iteration count: {error}")))?;
        if !(SCRAM_ITERATIONS_MIN..=SCRAM_ITERATIONS_MAX).contains(&iterations) {
            return Err(SaslError::ServerNotVerified(format!(
                "iteration count {iterations} is outside {SCRAM_ITERATIONS_MIN}..={SCRAM_ITERATIONS_MAX}"
            )));
        }
        let salted = salted_password(self.mechanism, &self.password, &salt, iterations);
        let client_key = hmac_of(self.mechanism, &salted, b"Client Key");
        let stored_key = digest::digest(self.mechanism.digest(), &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac_of(self.mechanism, stored_key.as_ref(), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac_of(self.mechanism, &salted, b"Server Key");
        self.expected_server_signature = Some(hmac_of(
            self.mechanism,
            &server_key,
            auth_message.as_bytes(),
        ));
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Checks that the broker proved it knows the credential.
    pub fn server_final(&self, message: &[u8]) -> Result<(), SaslError> {
        let Some(expected) = &self.expected_server_signature else {
            return Err(SaslError::OutOfTurn("server-final before server-first"));
        };
        let message = utf8(message)?;
        let parsed = attributes(message)?;
        if let Ok(error) = attribute(&parsed, 'e', message) {
            return Err(SaslError::Refused(error.to_string()));
        }
        let signature = base64_decode(attribute(&parsed, 'v', message)?, "the server signature")?;
        if bool::from(signature.ct_eq(expected)) {
            Ok(())
        } else {
            Err(SaslError::ServerNotVerified(
                "its signature does not match the password".to_string(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// librdkafka before 2.1 repeats its own nonce in client-final, and
    /// Kafka accepts that; so does Strata, and the proof still counts.
    #[test]
    fn a_final_nonce_that_ends_with_ours_is_accepted() {
        let mechanism = ScramMechanism::Sha256;
        let credential = ScramCredential::from_password(mechanism, "pw", 4096);
        for (password, accepted) in [("pw", true), ("wrong", false)] {
            let mut server = ScramServer::new(mechanism);
            let server_first = server
                .client_first(b"n,,n=u,r=abc", |_| Some(credential.clone()))
                .unwrap();
            let server_first = String::from_utf8(server_first).unwrap();
            let nonce = attributes(&server_first).unwrap()[0].1.to_string();
            // What such a client signs: its nonce, then the whole of ours.
            let without_proof = format!("c=biws,r=abc{nonce}");
            let auth_message = format!("n=u,r=abc,{server_first},{without_proof}");
            let salted = salted_password(mechanism, password, &credential.salt, 4096);
            let client_key = hmac_of(mechanism, &salted, b"Client Key");
            let stored_key = digest::digest(mechanism.digest(), &client_key);
            let signature = hmac_of(mechanism, stored_key.as_ref(), auth_message.as_bytes());
            let proof: Vec<u8> = client_key
                .iter()
                .zip(&signature)
                .map(|(k, s)| k ^ s)
                .collect();
            let message = format!("{without_proof},p={}", BASE64.encode(proof));
            assert_eq!(
                server.client_final(message.as_bytes()).is_ok(),
                accepted,
                "{password}"
            );
        }
    }

    /// RFC 7677's example exchange, from both ends.
    #[test]
    fn scram_sha_256_matches_rfc_7677() {
        let mut client = ScramClient::with_nonce(
            ScramMechanism::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        assert_eq!(client.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = client.server_first(server_first).unwrap();
        assert_eq!(
            String::from_utf8(client_final).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        client
            .server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(matches!(
            client.server_final(b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(SaslError::ServerNotVerified(_))
        ));
    }

    fn exchange(
        mechanism: ScramMechanism,
        stored: Option<&ScramCredential>,
        user: &str,
        password: &str,
    ) -> Result<String, SaslError> {
        let mut client = ScramClient::new(mechanism, user, password);
        let mut server = ScramServer::new(mechanism);
        let server_first = server.client_first(&client.client_first(), |_| stored.cloned())?;
        let client_final = client.server_first(&server_first)?;
        let (user, server_final) = server.client_final(&client_final)?;
        client.server_final(&server_final)?;
        Ok(user)
    }

    #[test]
    fn the_right_password_authenticates_and_a_wrong_one_does_not() {
        for mechanism in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
            let credential = ScramCredential::from_password(mechanism, "s3cret", 4096);
            assert_eq!(
                exchange(mechanism, Some(&credential), "al=i,ce", "s3cret").unwrap(),
                "al=i,ce"
            );
            assert_eq!(
                exchange(mechanism, Some(&credential), "alice", "s3creT"),
                Err(SaslError::InvalidCredentials)
            );
            assert_eq!(
                exchange(mechanism, None, "nobody", "s3cret"),
                Err(SaslError::InvalidCredentials)
            );
        }
    }

    #[test]
    fn an_unknown_user_looks_like_a_known_one() {
        let first = |user: &str| {
            let mut server = ScramServer::new(ScramMechanism::Sha512);
            let message = format!("n,,n={user},r=abc");
            let answer = server.client_first(message.as_bytes(), |_| None).unwrap();
            let answer = String::from_utf8(answer).unwrap();
            answer.split(',').nth(1).unwrap().to_string()
        };
        // The same salt each time for a name, different between names.
        assert_eq!(first("ghost"), first("ghost"));
        assert_ne!(first("ghost"), first("spirit"));
    }

    #[test]
    fn a_replayed_or_reordered_message_is_refused() {
        let credential = ScramCredential::from_password(ScramMechanism::Sha256, "pw", 4096);
        let mut client = ScramClient::new(ScramMechanism::Sha256, "u", "pw");
        let mut server = ScramServer::new(ScramMechanism::Sha256);
        assert!(server.client_final(b"c=biws,r=x,p=AAAA").is_err());
        let mut server = ScramServer::new(ScramMechanism::Sha256);
        let server_first = server
            .client_first(&client.client_first(), |_| Some(credential.clone()))
            .unwrap();
        let client_final = client.server_first(&server_first).unwrap();
        server.client_final(&client_final).unwrap();
        assert!(matches!(
            server.client_final(&client_final),
            Err(SaslError::OutOfTurn(_))
        ));
        // The same final message against a new exchange (a new nonce) fails.
        let mut other = ScramServer::new(ScramMechanism::Sha256);
        other
            .client_first(&client.client_first(), |_| Some(credential.clone()))
            .unwrap();
        assert_eq!(
            other.client_final(&client_final),
            Err(SaslError::InvalidCredentials)
        );
    }

    #[test]
    fn malformed_messages_are_refused_without_panicking() {
        for message in [
            &b""[..],
            b"n,,",
            b"y,,n=u,r=x",
            b"n,,r=x,n=u",
            b"n,,n=u",
            b"n,,n=a=zz,r=x",
            b"\xff\xfe",
            b"n,,n=u,r=x,tokenauth=true",
        ] {
            let mut server = ScramServer::new(ScramMechanism::Sha512);
            assert!(
                server.client_first(message, |_| None).is_err(),
                "{message:?}"
            );
        }
    }

    #[test]
    fn plain_messages_parse_and_check_against_scram_credentials() {
        assert_eq!(
            parse_plain(&plain_message("alice", "pw")).unwrap(),
            ("alice".to_string(), "pw".to_string())
        );
        assert_eq!(
            parse_plain(b"alice\0alice\0pw").unwrap().0,
            "alice".to_string()
        );
        assert_eq!(
            parse_plain(b"admin\0alice\0pw"),
            Err(SaslError::InvalidCredentials)
        );
        assert!(parse_plain(b"alice\0pw").is_err());
        assert!(parse_plain(b"\0\0pw").is_err());
        let credential = ScramCredential::from_password(ScramMechanism::Sha512, "pw", 4096);
        assert!(credential.matches_password(ScramMechanism::Sha512, "pw"));
        assert!(!credential.matches_password(ScramMechanism::Sha512, "pW"));
    }

    #[test]
    fn mechanisms_parse_by_name() {
        assert_eq!(
            Mechanism::parse("scram-sha-512"),
            Some(Mechanism::Scram(ScramMechanism::Sha512))
        );
        assert_eq!(Mechanism::parse("PLAIN"), Some(Mechanism::Plain));
        assert_eq!(Mechanism::parse("GSSAPI"), None);
    }
}
