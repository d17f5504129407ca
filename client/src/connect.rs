//! Connection settings as Kafka's tools take them: a bootstrap list, and
//! TLS and SASL settings from options or from a Kafka-style properties file
//! (`--command-config`); options win. `logctl` and `logbench` take them as
//! flags (with the `clap` feature, [`ConnectOptions`] is a `clap::Args`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cluster::{ClientConfig, SaslMechanism, SaslSettings, Security, TlsSettings};
use crate::error::{Error, Result};

/// Where the brokers are and how to reach them.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct ConnectOptions {
    /// Brokers to bootstrap from, HOST[:PORT][,HOST[:PORT]...]; the port
    /// is 9092 when none is given.
    #[cfg_attr(
        feature = "clap",
        arg(
            short = 'b',
            long = "bootstrap-server",
            env = "STRATA_BROKERS",
            default_value = "127.0.0.1:9092",
            global = true
        )
    )]
    pub bootstrap: String,
    /// Kafka client properties (security.protocol, sasl.mechanism,
    /// sasl.username, sasl.password or sasl.jaas.config, ssl.ca.location,
    /// ssl.certificate.location, ssl.key.location); flags override them.
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE", global = true))]
    pub command_config: Option<PathBuf>,
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL [default: PLAINTEXT].
    #[cfg_attr(feature = "clap", arg(long, value_name = "PROTOCOL", global = true))]
    pub security_protocol: Option<String>,
    /// CA certificates (PEM) to check the brokers' certificates against
    /// [default: the system's].
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE.pem", global = true))]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for brokers that ask for one.
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE.pem", global = true))]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE.pem", global = true))]
    pub tls_key: Option<PathBuf>,
    /// SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN [default: SCRAM-SHA-512].
    #[cfg_attr(feature = "clap", arg(long, value_name = "MECHANISM", global = true))]
    pub sasl_mechanism: Option<String>,
    /// The SASL user.
    #[cfg_attr(feature = "clap", arg(long, value_name = "USER", global = true))]
    pub sasl_username: Option<String>,
    /// The SASL password (better: the environment or --command-config,
    /// which other users of the machine cannot see in the process list).
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            value_name = "PASSWORD",
            env = "STRATA_SASL_PASSWORD",
            hide_env_values = true,
            global = true
        )
    )]
    pub sasl_password: Option<String>,
}

impl ConnectOptions {
    /// The client settings these options come to, for a client calling
    /// itself `client_id`.
    pub fn client_config(&self, client_id: &str) -> Result<ClientConfig> {
        let properties = match &self.command_config {
            Some(path) => read_properties(path)?,
            None => BTreeMap::new(),
        };
        let setting = |option: &Option<String>, keys: &[&str]| -> Option<String> {
            option
                .clone()
                .or_else(|| keys.iter().find_map(|key| properties.get(*key).cloned()))
        };
        let path = |option: &Option<PathBuf>, keys: &[&str]| -> Option<PathBuf> {
            option.clone().or_else(|| {
                keys.iter()
                    .find_map(|key| properties.get(*key).map(PathBuf::from))
            })
        };
        let protocol = setting(&self.security_protocol, &["security.protocol"])
            .unwrap_or_else(|| "PLAINTEXT".to_string())
            .to_ascii_uppercase();
        let (tls, sasl) = match protocol.as_str() {
            "PLAINTEXT" => (false, false),
            "SSL" => (true, false),
            "SASL_PLAINTEXT" => (false, true),
            "SASL_SSL" => (true, true),
            other => {
                return Err(Error::Config(format!(
                    "security protocol '{other}' is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
                )))
            }
        };
        let (jaas_user, jaas_password) = match properties.get("sasl.jaas.config") {
            Some(jaas) => parse_jaas(jaas)?,
            None => (None, None),
        };
        let username = setting(&self.sasl_username, &["sasl.username"]).or(jaas_user);
        let password = setting(&self.sasl_password, &["sasl.password"]).or(jaas_password);
        let mut security = Security::default();
        if tls {
            security.tls = Some(TlsSettings {
                ca_file: path(
                    &self.tls_ca,
                    &["ssl.ca.location", "ssl.truststore.location"],
                ),
                certificate: path(
                    &self.tls_cert,
                    &["ssl.certificate.location", "ssl.keystore.location"],
                ),
                private_key: path(&self.tls_key, &["ssl.key.location"]),
            });
        } else if self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_key.is_some() {
            return Err(Error::Config(
                "--tls-ca, --tls-cert and --tls-key need security protocol SSL or SASL_SSL"
                    .to_string(),
            ));
        }
        if sasl {
            let mechanism = setting(&self.sasl_mechanism, &["sasl.mechanism", "sasl.mechanisms"])
                .unwrap_or_else(|| "SCRAM-SHA-512".to_string());
            let mechanism = SaslMechanism::parse(&mechanism).ok_or_else(|| {
                Error::Config(format!(
                    "SASL mechanism '{mechanism}' is not SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN"
                ))
            })?;
            let (Some(username), Some(password)) = (username, password) else {
                return Err(Error::Config(format!(
                    "{protocol} needs a user and a password: --sasl-username and --sasl-password (or STRATA_SASL_PASSWORD), or sasl.username and sasl.password in --command-config"
                )));
            };
            security.sasl = Some(SaslSettings {
                mechanism,
                username,
                password,
            });
        } else if username.is_some() {
            return Err(Error::Config(format!(
                "a SASL user is given, but the security protocol is {protocol}; use SASL_SSL (or SASL_PLAINTEXT)"
            )));
        }
        let mut client = ClientConfig::new(&self.bootstrap);
        client.client_id = setting(&None, &["client.id"]).unwrap_or_else(|| client_id.to_string());
        client.security = security;
        Ok(client)
    }
}

/// `key=value` lines (`key: value` too); `#` and `!` start comments.
fn read_properties(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        Error::Config(format!(
            "cannot read --command-config {}: {error}",
            path.display()
        ))
    })?;
    parse_properties(&text).map_err(|reason| {
        Error::Config(format!("in --command-config {}: {reason}", path.display()))
    })
}

/// Unknown keys are reported on stderr and ignored, as Kafka's tools do.
fn parse_properties(text: &str) -> std::result::Result<BTreeMap<String, String>, String> {
    let mut properties = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some((key, value)) = line.split_once(['=', ':']) else {
            return Err(format!("line {} is not key=value", index + 1));
        };
        let key = key.trim();
        if ![
            "security.protocol",
            "sasl.mechanism",
            "sasl.mechanisms",
            "sasl.username",
            "sasl.password",
            "sasl.jaas.config",
            "ssl.ca.location",
            "ssl.truststore.location",
            "ssl.truststore.type",
            "ssl.certificate.location",
            "ssl.keystore.location",
            "ssl.keystore.type",
            "ssl.key.location",
            "ssl.endpoint.identification.algorithm",
            "client.id",
        ]
        .contains(&key)
        {
            eprintln!(
                "ignoring property '{key}' (line {}), which is not used here",
                index + 1
            );
        }
        if key.ends_with(".type") && !value.trim().eq_ignore_ascii_case("PEM") {
            return Err(format!(
                "line {}: {key} must be PEM (PEM files are read, not JKS or PKCS#12)",
                index + 1
            ));
        }
        properties.insert(key.to_string(), value.trim().to_string());
    }
    Ok(properties)
}

/// The user and password of a `sasl.jaas.config` value
/// (`...LoginModule required username="u" password="p";`).
fn parse_jaas(jaas: &str) -> Result<(Option<String>, Option<String>)> {
    let value_of = |name: &str| -> Result<Option<String>> {
        let Some(at) = jaas.find(&format!("{name}=\"")) else {
            return Ok(None);
        };
        let rest = &jaas[at + name.len() + 2..];
        let end = rest.find('"').ok_or_else(|| {
            Error::Config(format!("sasl.jaas.config: {name} has no closing quote"))
        })?;
        Ok(Some(rest[..end].to_string()))
    };
    Ok((value_of("username")?, value_of("password")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_with_comments_and_either_separator() {
        let properties = parse_properties(
            "# a comment\nsecurity.protocol=SASL_SSL\n sasl.mechanism : SCRAM-SHA-256\n\n! another\nssl.ca.location=/etc/ca.pem\n",
        )
        .unwrap();
        assert_eq!(properties["security.protocol"], "SASL_SSL");
        assert_eq!(properties["sasl.mechanism"], "SCRAM-SHA-256");
        assert_eq!(properties["ssl.ca.location"], "/etc/ca.pem");
        assert!(parse_properties("no separator here").is_err());
        assert!(parse_properties("ssl.truststore.type=JKS").is_err());
    }

    #[test]
    fn jaas_config_gives_user_and_password() {
        let jaas = r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" password="s3 cret";"#;
        assert_eq!(
            parse_jaas(jaas).unwrap(),
            (Some("alice".to_string()), Some("s3 cret".to_string()))
        );
        assert!(parse_jaas(r#"x required username="alice"#).is_err());
    }
}
