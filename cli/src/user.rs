//! `logctl user create | delete | list`: SASL/SCRAM users.

use std::io::BufRead;

use anyhow::{bail, Context};
use serde_json::json;
use strata_client::ScramMechanism;

use crate::connect::Connect;
use crate::output::{print_json, print_table, say, Format};

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create a user, or set its password: a SCRAM credential per
    /// mechanism (PLAIN logins are checked against them too).
    Create {
        /// The user name.
        name: String,
        /// The password; read from the first line of stdin when not given
        /// here or in STRATA_USER_PASSWORD.
        #[arg(long, env = "STRATA_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// SCRAM-SHA-256, SCRAM-SHA-512 or all [default: all].
        #[arg(long, default_value = "all")]
        mechanism: String,
        /// Salting rounds, 4096 to 16384.
        #[arg(long, default_value_t = 8192)]
        iterations: u32,
    },
    /// Remove a user's credentials (for one mechanism, or all).
    Delete {
        /// The user name.
        name: String,
        /// SCRAM-SHA-256, SCRAM-SHA-512 or all [default: all].
        #[arg(long, default_value = "all")]
        mechanism: String,
    },
    /// Users and the SCRAM mechanisms they have credentials for.
    List {
        /// Only these users (default: every user).
        names: Vec<String>,
    },
}

pub async fn run(connect: &Connect, format: Format, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Create {
            name,
            password,
            mechanism,
            iterations,
        } => {
            let mechanisms = mechanisms(&mechanism)?;
            let password = match password {
                Some(password) => password,
                None => read_password()?,
            };
            if password.is_empty() {
                bail!("the password is empty");
            }
            let admin = connect.admin().await?;
            for mechanism in &mechanisms {
                admin
                    .upsert_scram_credential(&name, *mechanism, &password, iterations)
                    .await?;
            }
            report(format, "created", &name, &mechanisms);
            Ok(())
        }
        UserCommand::Delete { name, mechanism } => {
            let admin = connect.admin().await?;
            let mechanisms = if mechanism.eq_ignore_ascii_case("all") {
                let described = admin.describe_users(&[&name]).await?;
                described
                    .first()
                    .map(|user| user.credentials.iter().map(|(m, _)| *m).collect())
                    .unwrap_or_default()
            } else {
                mechanisms(&mechanism)?
            };
            for mechanism in &mechanisms {
                admin.delete_scram_credential(&name, *mechanism).await?;
            }
            report(format, "deleted", &name, &mechanisms);
            Ok(())
        }
        UserCommand::List { names } => {
            let admin = connect.admin().await?;
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let users = admin.describe_users(&names).await?;
            match format {
                Format::Json => {
                    for user in &users {
                        print_json(&json!({
                            "user": user.name,
                            "credentials": user.credentials.iter().map(|(mechanism, iterations)| json!({
                                "mechanism": mechanism.name(),
                                "iterations": iterations,
                            })).collect::<Vec<_>>(),
                        }));
                    }
                }
                Format::Table => {
                    let rows: Vec<Vec<String>> = users
                        .iter()
                        .map(|user| {
                            vec![
                                user.name.clone(),
                                user.credentials
                                    .iter()
                                    .map(|(mechanism, iterations)| {
                                        format!("{} ({iterations} iterations)", mechanism.name())
                                    })
                                    .collect::<Vec<_>>()
                                    .join(", "),
                            ]
                        })
                        .collect();
                    print_table(&["USER", "CREDENTIALS"], &rows);
                }
            }
            Ok(())
        }
    }
}

fn mechanisms(name: &str) -> anyhow::Result<Vec<ScramMechanism>> {
    match name.to_ascii_uppercase().as_str() {
        "ALL" => Ok(vec![ScramMechanism::Sha256, ScramMechanism::Sha512]),
        "SCRAM-SHA-256" => Ok(vec![ScramMechanism::Sha256]),
        "SCRAM-SHA-512" => Ok(vec![ScramMechanism::Sha512]),
        _ => bail!("--mechanism '{name}' is not SCRAM-SHA-256, SCRAM-SHA-512 or all"),
    }
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn report(format: Format, what: &str, name: &str, mechanisms: &[ScramMechanism]) {
    let names: Vec<&str> = mechanisms.iter().map(|m| m.name()).collect();
    match format {
        Format::Json => print_json(&json!({ "user": name, what: names })),
        Format::Table => say!("user '{name}' {what}: {}", names.join(", ")),
    }
}
