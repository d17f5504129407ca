//! DescribeUserScramCredentials: which SCRAM mechanisms each user has a
//! credential for, and with how many iterations; never the credential.

use std::collections::BTreeSet;

use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};

use super::error_code;
use super::{str_bytes, Context};

pub fn handle(
    context: &Context,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let metadata = context.controller.metadata();
    let describe = |user: &str| {
        let result =
            DescribeUserScramCredentialsResult::default().with_user(str_bytes(user.to_string()));
        match metadata.scram_users.get(user) {
            Some(credentials) => result.with_credential_infos(
                credentials
                    .iter()
                    .map(|(mechanism, credential)| {
                        CredentialInfo::default()
                            .with_mechanism(*mechanism)
                            .with_iterations(credential.iterations as i32)
                    })
                    .collect(),
            ),
            None => result
                .with_error_code(error_code::RESOURCE_NOT_FOUND)
                .with_error_message(Some(str_bytes(format!(
                    "user '{user}' has no SCRAM credential"
                )))),
        }
    };
    // Null or empty: every user.
    let results = match request.users.filter(|users| !users.is_empty()) {
        None => metadata
            .scram_users
            .keys()
            .map(|user| describe(user))
            .collect(),
        Some(users) => {
            let mut seen = BTreeSet::new();
            let duplicated: BTreeSet<String> = users
                .iter()
                .filter(|user| !seen.insert(user.name.to_string()))
                .map(|user| user.name.to_string())
                .collect();
            seen.into_iter()
                .map(|user| {
                    if duplicated.contains(&user) {
                        DescribeUserScramCredentialsResult::default()
                            .with_user(str_bytes(user.clone()))
                            .with_error_code(error_code::DUPLICATE_RESOURCE)
                            .with_error_message(Some(str_bytes(format!(
                                "user '{user}' is named twice"
                            ))))
                    } else {
                        describe(&user)
                    }
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}
