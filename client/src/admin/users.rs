//! SASL/SCRAM users: their credentials are set, listed and removed here.
//! The password is salted and iterated on this side; only the salted form
//! travels (Kafka's AlterUserScramCredentials), and the broker keeps only
//! keys derived from it.

use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
};
use kafka_protocol::protocol::StrBytes;
use strata_protocol::sasl::{self, ScramMechanism};

use super::Admin;
use crate::cluster::Target;
use crate::error::{check, Result};

/// A user and the SCRAM mechanisms it has a credential for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserDescription {
    pub name: String,
    /// (mechanism, iterations), by mechanism.
    pub credentials: Vec<(ScramMechanism, u32)>,
}

/// Bytes of salt of a credential made here.
const SALT_BYTES: usize = 32;

impl Admin {
    /// Sets `user`'s password for `mechanism` (creating the user if need
    /// be) with `iterations` rounds (4096..=16384; Kafka's default 4096).
    pub async fn upsert_scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
        password: &str,
        iterations: u32,
    ) -> Result<()> {
        let salt = sasl::random_bytes(SALT_BYTES);
        let salted = sasl::salted_password(mechanism, password, &salt, iterations);
        let upsertion = ScramCredentialUpsertion::default()
            .with_name(StrBytes::from_string(user.to_string()))
            .with_mechanism(mechanism.kafka_type())
            .with_iterations(iterations as i32)
            .with_salt(Bytes::from(salt))
            .with_salted_password(Bytes::from(salted));
        let request = AlterUserScramCredentialsRequest::default().with_upsertions(vec![upsertion]);
        self.alter_scram_credentials(user, &request, "set the credential of")
            .await
    }

    /// Removes `user`'s credential for `mechanism`; the user is gone once
    /// it has none.
    pub async fn delete_scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<()> {
        let deletion = ScramCredentialDeletion::default()
            .with_name(StrBytes::from_string(user.to_string()))
            .with_mechanism(mechanism.kafka_type());
        let request = AlterUserScramCredentialsRequest::default().with_deletions(vec![deletion]);
        self.alter_scram_credentials(user, &request, "delete the credential of")
            .await
    }

    async fn alter_scram_credentials(
        &self,
        user: &str,
        request: &AlterUserScramCredentialsRequest,
        what: &str,
    ) -> Result<()> {
        let answer = self.cluster.call(Target::Any, request).await?;
        let result = answer.first(&answer.response.results)?;
        check(
            || format!("{what} user '{user}'"),
            result.error_code,
            result.error_message.as_ref(),
        )
    }

    /// Users with SCRAM credentials: `users`, or every one when empty.
    pub async fn describe_users(&self, users: &[&str]) -> Result<Vec<UserDescription>> {
        let request = DescribeUserScramCredentialsRequest::default().with_users(
            (!users.is_empty()).then(|| {
                users
                    .iter()
                    .map(|user| {
                        UserName::default().with_name(StrBytes::from_string(user.to_string()))
                    })
                    .collect()
            }),
        );
        let response = self.cluster.call(Target::Any, &request).await?.response;
        check(
            || "describe users".to_string(),
            response.error_code,
            response.error_message.as_ref(),
        )?;
        let mut described = Vec::with_capacity(response.results.len());
        for result in response.results {
            check(
                || format!("describe user '{}'", result.user),
                result.error_code,
                result.error_message.as_ref(),
            )?;
            let mut credentials: Vec<(ScramMechanism, u32)> = result
                .credential_infos
                .iter()
                .filter_map(|info| {
                    Some((
                        ScramMechanism::from_kafka_type(info.mechanism)?,
                        info.iterations.max(0) as u32,
                    ))
                })
                .collect();
            credentials.sort();
            described.push(UserDescription {
                name: result.user.to_string(),
                credentials,
            });
        }
        described.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(described)
    }
}
