//! How logctl reaches the brokers: the bootstrap list, and TLS and SASL
//! settings from flags or from a Kafka-style properties file
//! (`--command-config`, as Kafka's own tools take it); flags win.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use strata_client::{
    Admin, ClientConfig, Consumer, ConsumerBuilder, Producer, ProducerBuilder, SaslMechanism,
    SaslSettings, Security, TlsSettings,
};

/// Connection flags, global to every command.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Brokers to bootstrap from, HOST[:PORT][,HOST[:PORT]...]; the port
    /// is 9092 when none is given.
    #[arg(
        short = 'b',
        long = "bootstrap-server",
        env = "STRATA_BROKERS",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap: String,
    /// Kafka client properties (security.protocol, sasl.mechanism,
    /// sasl.username, sasl.password or sasl.jaas.config, ssl.ca.location,
    /// ssl.certificate.location, ssl.key.location); flags override them.
    #[arg(long, value_name = "FILE", global = true)]
    command_config: Option<PathBuf>,
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL [default: PLAINTEXT].
    #[arg(long, value_name = "PROTOCOL", global = true)]
    security_protocol: Option<String>,
    /// CA certificates (PEM) to check the brokers' certificates against
    /// [default: the system's].
    #[arg(long, value_name = "FILE.pem", global = true)]
    tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for brokers that ask for one.
    #[arg(long, value_name = "FILE.pem", global = true)]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE.pem", global = true)]
    tls_key: Option<PathBuf>,
    /// SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN [default: SCRAM-SHA-512].
    #[arg(long, value_name = "MECHANISM", global = true)]
    sasl_mechanism: Option<String>,
    /// The SASL user.
    #[arg(long, value_name = "USER", global = true)]
    sasl_username: Option<String>,
    /// The SASL password (better: the environment or --command-config,
    /// which other users of the machine cannot see in the process list).
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "STRATA_SASL_PASSWORD",
        hide_env_values = true,
        global = true
    )]
    sasl_password: Option<String>,
}

/// Where the brokers are and how to reach them.
pub struct Connect {
    pub client: ClientConfig,
}

impl Connect {
    pub fn from_args(args: &ConnectArgs) -> anyhow::Result<Connect> {
        let properties = match &args.command_config {
            Some(path) => read_properties(path)?,
            None => BTreeMap::new(),
        };
        let setting = |flag: &Option<String>, keys: &[&str]| -> Option<String> {
            flag.clone()
                .or_else(|| keys.iter().find_map(|key| properties.get(*key).cloned()))
        };
        let path = |flag: &Option<PathBuf>, keys: &[&str]| -> Option<PathBuf> {
            flag.clone().or_else(|| {
                keys.iter()
                    .find_map(|key| properties.get(*key).map(PathBuf::from))
            })
        };
        let protocol = setting(&args.security_protocol, &["security.protocol"])
            .unwrap_or_else(|| "PLAINTEXT".to_string())
            .to_ascii_uppercase();
        let (tls, sasl) = match protocol.as_str() {
            "PLAINTEXT" => (false, false),
            "SSL" => (true, false),
            "SASL_PLAINTEXT" => (false, true),
            "SASL_SSL" => (true, true),
            other => bail!(
                "security protocol '{other}' is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
            ),
        };
        let (jaas_user, jaas_password) = match properties.get("sasl.jaas.config") {
            Some(jaas) => parse_jaas(jaas)?,
            None => (None, None),
        };
        let username = args
            .sasl_username
            .clone()
            .or_else(|| properties.get("sasl.username").cloned())
            .or(jaas_user);
        let password = args
            .sasl_password
            .clone()
            .or_else(|| properties.get("sasl.password").cloned())
            .or(jaas_password);
        let mut security = Security::default();
        if tls {
            security.tls = Some(TlsSettings {
                ca_file: path(
                    &args.tls_ca,
                    &["ssl.ca.location", "ssl.truststore.location"],
                ),
                certificate: path(
                    &args.tls_cert,
                    &["ssl.certificate.location", "ssl.keystore.location"],
                ),
                private_key: path(&args.tls_key, &["ssl.key.location"]),
            });
        } else if args.tls_ca.is_some() || args.tls_cert.is_some() || args.tls_key.is_some() {
            bail!("--tls-ca, --tls-cert and --tls-key need --security-protocol SSL or SASL_SSL");
        }
        if sasl {
            let mechanism = setting(&args.sasl_mechanism, &["sasl.mechanism", "sasl.mechanisms"])
                .unwrap_or_else(|| "SCRAM-SHA-512".to_string());
            let mechanism = SaslMechanism::parse(&mechanism).with_context(|| {
                format!("SASL mechanism '{mechanism}' is not SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN")
            })?;
            let (Some(username), Some(password)) = (username, password) else {
                bail!("{protocol} needs a user and a password: --sasl-username and --sasl-password (or STRATA_SASL_PASSWORD), or sasl.username and sasl.password in --command-config");
            };
            security.sasl = Some(SaslSettings {
                mechanism,
                username,
                password,
            });
        } else if username.is_some() {
            bail!("a SASL user is given, but the security protocol is {protocol}; use SASL_SSL (or SASL_PLAINTEXT)");
        }
        let mut client = ClientConfig::new(&args.bootstrap);
        client.client_id = "logctl".to_string();
        client.security = security;
        Ok(Connect { client })
    }

    pub fn bootstrap(&self) -> String {
        self.client.bootstrap.join(",")
    }

    pub async fn admin(&self) -> strata_client::Result<Admin> {
        Admin::with_config(self.client.clone()).await
    }

    pub fn producer(&self) -> ProducerBuilder {
        Producer::builder(&self.bootstrap())
            .client_id(&self.client.client_id)
            .security(self.client.security.clone())
    }

    pub fn consumer(&self) -> ConsumerBuilder {
        Consumer::builder(&self.bootstrap())
            .client_id(&self.client.client_id)
            .security(self.client.security.clone())
    }

    /// Whether any TLS or SASL is configured.
    pub fn is_secured(&self) -> bool {
        self.client.security.tls.is_some() || self.client.security.sasl.is_some()
    }
}

/// `key=value` lines (`key: value` too); `#` and `!` start comments.
fn read_properties(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --command-config {}", path.display()))?;
    parse_properties(&text).with_context(|| format!("in --command-config {}", path.display()))
}

fn parse_properties(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut properties = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some((key, value)) = line.split_once(['=', ':']) else {
            bail!("line {} is not key=value", index + 1);
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
                "logctl: ignoring property '{key}' (line {}), which logctl does not use",
                index + 1
            );
        }
        if key.ends_with(".type") && !value.trim().eq_ignore_ascii_case("PEM") {
            bail!(
                "line {}: {key} must be PEM (logctl reads PEM files, not JKS or PKCS#12)",
                index + 1
            );
        }
        properties.insert(key.to_string(), value.trim().to_string());
    }
    Ok(properties)
}

/// The user and password of a `sasl.jaas.config` value
/// (`...LoginModule required username="u" password="p";`).
fn parse_jaas(jaas: &str) -> anyhow::Result<(Option<String>, Option<String>)> {
    let value_of = |name: &str| -> anyhow::Result<Option<String>> {
        let Some(at) = jaas.find(&format!("{name}=\"")) else {
            return Ok(None);
        };
        let rest = &jaas[at + name.len() + 2..];
        let end = rest
            .find('"')
            .with_context(|| format!("sasl.jaas.config: {name} has no closing quote"))?;
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
