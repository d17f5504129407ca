//! AlterUserScramCredentials: sets and removes users' SCRAM credentials.
//! The client salts the password itself (`salted_password`); the broker
//! keeps only the keys derived from it, committed through the controller so
//! every broker can check a login. One result per user, as in Kafka: a user
//! named twice for one mechanism, or in both lists for one, is refused whole.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
};
use strata_protocol::sasl::{
    ScramCredential, ScramMechanism, SCRAM_ITERATIONS_MAX, SCRAM_ITERATIONS_MIN,
};

use super::error_code;
use super::{commit, str_bytes, Context};
use crate::controller::metadata::{MetadataCommand, ScramRecord};

pub async fn handle(
    context: &Context,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    // Per user, in request order: the commands, or why the user is refused.
    let mut users: BTreeMap<String, Result<Vec<MetadataCommand>, (i16, String)>> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    let deletions = request.deletions.into_iter().map(|deletion| {
        let command =
            check_mechanism(deletion.mechanism).map(|_| MetadataCommand::DeleteScramCredential {
                user: deletion.name.to_string(),
                mechanism: deletion.mechanism,
            });
        (deletion.name.to_string(), deletion.mechanism, command)
    });
    let upsertions = request.upsertions.into_iter().map(|upsertion| {
        let user = upsertion.name.to_string();
        let command = check_mechanism(upsertion.mechanism).and_then(|mechanism| {
            let iterations = u32::try_from(upsertion.iterations).unwrap_or(0);
            if !(SCRAM_ITERATIONS_MIN..=SCRAM_ITERATIONS_MAX).contains(&iterations) {
                return Err((
                    error_code::UNACCEPTABLE_CREDENTIAL,
                    format!(
                        "{} iterations is outside {SCRAM_ITERATIONS_MIN}..={SCRAM_ITERATIONS_MAX}",
                        upsertion.iterations
                    ),
                ));
            }
            if upsertion.salt.is_empty() || upsertion.salted_password.is_empty() {
                return Err((
                    error_code::UNACCEPTABLE_CREDENTIAL,
                    "a credential needs a salt and a salted password".to_string(),
                ));
            }
            let credential = ScramCredential::from_salted_password(
                mechanism,
                upsertion.salt.to_vec(),
                iterations,
                &upsertion.salted_password,
            );
            Ok(MetadataCommand::UpsertScramCredential {
                user: user.clone(),
                mechanism: upsertion.mechanism,
                credential: ScramRecord::from(credential),
            })
        });
        (user, upsertion.mechanism, command)
    });
    for (user, mechanism, command) in deletions.chain(upsertions) {
        let entry = users.entry(user.clone()).or_insert_with(|| Ok(Vec::new()));
        let command = if user.is_empty() {
            Err((
                error_code::UNACCEPTABLE_CREDENTIAL,
                "the user name is empty".to_string(),
            ))
        } else if !seen.insert((user.clone(), mechanism)) {
            Err((
                error_code::DUPLICATE_RESOURCE,
                format!("user '{user}' is named twice for mechanism {mechanism}"),
            ))
        } else {
            command
        };
        // A user refused once stays refused, whole.
        match (command, entry) {
            (_, Err(_)) => {}
            (Ok(command), Ok(commands)) => commands.push(command),
            (Err(refusal), entry) => *entry = Err(refusal),
        }
    }
    let mut results = Vec::with_capacity(users.len());
    for (user, commands) in users {
        let (code, message) = match commands {
            Err(refusal) => refusal,
            Ok(commands) => {
                let mut outcome = (0, String::new());
                for command in commands {
                    let committed = commit(context, command).await;
                    if !committed.is_ok() {
                        let message = committed
                            .error_message
                            .map(|m| m.to_string())
                            .unwrap_or_default();
                        outcome = (committed.error_code, message);
                        break;
                    }
                }
                outcome
            }
        };
        results.push(
            AlterUserScramCredentialsResult::default()
                .with_user(str_bytes(user))
                .with_error_code(code)
                .with_error_message((code != 0).then(|| str_bytes(message))),
        );
    }
    AlterUserScramCredentialsResponse::default().with_results(results)
}

fn check_mechanism(mechanism: i8) -> Result<ScramMechanism, (i16, String)> {
    ScramMechanism::from_kafka_type(mechanism).ok_or_else(|| {
        (
            error_code::UNSUPPORTED_SASL_MECHANISM,
            format!("unknown SCRAM mechanism {mechanism} (1: SCRAM-SHA-256, 2: SCRAM-SHA-512)"),
        )
    })
}
