//! `logctl group list|describe|reset-offsets|delete`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::bail;
use serde_json::json;
use strata_client::{Admin, Error, GroupDescription, ResponseError};

use crate::connect::Connect;
use crate::output::{print_json, print_table, say, Format};

#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// List consumer groups with their state.
    List,
    /// Members and, per partition, the committed offset, log end and lag.
    Describe {
        /// The group to describe.
        group: String,
    },
    /// Move a group's committed offsets (a dry run unless --execute). The
    /// group must have no members: stop its consumers first.
    ResetOffsets {
        /// The group whose offsets move.
        group: String,
        /// The topic, or TOPIC:P,P,... for some of its partitions.
        #[arg(long, value_name = "TOPIC[:PARTITIONS]")]
        topic: String,
        /// To each partition's first offset.
        #[arg(long, group = "to")]
        to_earliest: bool,
        /// To each partition's end: skip everything not yet read.
        #[arg(long, group = "to")]
        to_latest: bool,
        /// To offset N of every partition (kept within the log).
        #[arg(long, group = "to", value_name = "N")]
        to_offset: Option<i64>,
        /// By N from the committed offset (negative: read again).
        #[arg(long, group = "to", value_name = "N", allow_hyphen_values = true)]
        shift_by: Option<i64>,
        /// To the first record at or after a time: 2026-12-03T10:00:00Z,
        /// an offset such as +01:00, or no zone for UTC.
        #[arg(long, group = "to", value_name = "DATETIME", value_parser = parse_datetime)]
        to_datetime: Option<i64>,
        /// To the first record at or after this long ago: 1h, 90m, 2d 4h,
        /// or Kafka's PT1H.
        #[arg(long, group = "to", value_name = "DURATION", value_parser = parse_duration)]
        by_duration: Option<std::time::Duration>,
        /// Commit the new offsets; without it nothing changes.
        #[arg(long)]
        execute: bool,
    },
    /// Delete a group without members, with its committed offsets.
    Delete {
        /// The group to delete.
        group: String,
    },
}

/// Milliseconds since the epoch of an RFC 3339 time; without a zone, UTC.
fn parse_datetime(text: &str) -> Result<i64, String> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp_millis());
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
        .map(|time| time.and_utc().timestamp_millis())
        .map_err(|_| {
            format!(
                "'{text}' is not a time such as 2026-12-03T10:00:00Z or 2026-12-03T11:00:00+01:00"
            )
        })
}

/// "1h 30m", "90s", or ISO 8601's "P1DT2H30M" as Kafka's tools take it.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let human = match text.strip_prefix('P') {
        Some(iso) => iso
            .replace('T', "")
            .replace('D', "d ")
            .replace('H', "h ")
            .replace('M', "m ")
            .replace('S', "s "),
        None => text.to_string(),
    };
    humantime::parse_duration(human.trim())
        .map_err(|error| format!("'{text}' is not a duration such as 1h, 90m or PT1H ({error})"))
}

/// One partition of a group's view: committed offset and log end.
struct PartitionLag {
    topic: String,
    partition: i32,
    committed: Option<i64>,
    log_end: Option<i64>,
    /// Where open transactions hold `read_committed` readers back.
    last_stable: Option<i64>,
    member: Option<String>,
}

impl PartitionLag {
    /// How far a `read_committed` reader's committed offset is from what
    /// it may read (the last stable offset).
    fn stable_lag(&self) -> Option<i64> {
        Some((self.last_stable? - self.committed?).max(0))
    }

    fn lag(&self) -> Option<i64> {
        Some((self.log_end? - self.committed?).max(0))
    }
}

pub async fn run(connect: &Connect, format: Format, command: GroupCommand) -> anyhow::Result<()> {
    let admin = connect.admin().await?;
    match command {
        GroupCommand::List => {
            let groups = admin.list_groups().await?;
            match format {
                Format::Json => print_json(&json!(groups
                    .iter()
                    .map(|group| json!({
                        "group": group.group_id,
                        "state": group.state,
                        "protocol_type": group.protocol_type,
                    }))
                    .collect::<Vec<_>>())),
                Format::Table => {
                    let rows: Vec<Vec<String>> = groups
                        .iter()
                        .map(|group| {
                            vec![
                                group.group_id.clone(),
                                group.state.clone(),
                                group.protocol_type.clone(),
                            ]
                        })
                        .collect();
                    print_table(&["GROUP", "STATE", "PROTOCOL-TYPE"], &rows);
                }
            }
        }
        GroupCommand::Describe { group } => describe(&admin, format, &group).await?,
        GroupCommand::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            shift_by,
            to_datetime,
            by_duration,
            execute,
        } => {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_millis() as i64);
            let target = if to_earliest {
                Target::Earliest
            } else if to_latest {
                Target::Latest
            } else if let Some(offset) = to_offset {
                Target::Offset(offset)
            } else if let Some(shift) = shift_by {
                Target::Shift(shift)
            } else if let Some(timestamp_ms) = to_datetime {
                Target::Time(timestamp_ms)
            } else if let Some(ago) = by_duration {
                Target::Time(now_ms.saturating_sub(ago.as_millis() as i64))
            } else {
                bail!("say where to: --to-earliest, --to-latest, --to-offset N, --shift-by N, --to-datetime T or --by-duration D")
            };
            let (topic, partitions) = match topic.split_once(':') {
                None => (topic, None),
                Some((name, list)) => {
                    let partitions = list
                        .split(',')
                        .map(|partition| partition.trim().parse::<i32>())
                        .collect::<Result<BTreeSet<i32>, _>>()
                        .map_err(|_| {
                            anyhow::anyhow!("'{list}' is not a list of partitions such as 0,2,5")
                        })?;
                    (name.to_string(), Some(partitions))
                }
            };
            reset_offsets(
                &admin,
                format,
                &group,
                &topic,
                partitions.as_ref(),
                target,
                execute,
            )
            .await?;
        }
        GroupCommand::Delete { group } => {
            match admin.delete_group(&group).await {
                Ok(()) => {}
                Err(Error::Broker {
                    error: ResponseError::GroupIdNotFound,
                    ..
                }) => bail!(
                    "group '{group}' does not exist; `logctl group list` shows the groups there are"
                ),
                Err(Error::Broker {
                    error: ResponseError::NonEmptyGroup,
                    ..
                }) => bail!("group '{group}' has members; stop its consumers before deleting it"),
                Err(error) => return Err(error.into()),
            }
            match format {
                Format::Json => print_json(&json!({"group": group, "deleted": true})),
                Format::Table => say!("deleted group {group}"),
            }
        }
    }
    Ok(())
}

/// Every partition of the topics the group committed for or is assigned:
/// committed offset, log end (the high watermark: what consumers can read)
/// and the member that has it.
async fn partition_lags(
    admin: &Admin,
    description: &GroupDescription,
) -> anyhow::Result<Vec<PartitionLag>> {
    let committed: BTreeMap<(String, i32), i64> = admin
        .group_offsets(&description.group_id)
        .await?
        .into_iter()
        .collect();
    let mut members: BTreeMap<(String, i32), String> = BTreeMap::new();
    for member in &description.members {
        for partition in &member.assignment {
            members.insert(partition.clone(), member.member_id.clone());
        }
    }
    let topics: BTreeSet<&String> = committed
        .keys()
        .chain(members.keys())
        .map(|(topic, _)| topic)
        .collect();
    let mut lags = Vec::new();
    for topic in topics {
        let Ok(described) = admin.describe_topic(topic).await else {
            continue; // deleted since: its offsets stay until the group goes
        };
        for (info, offsets) in described.topic.partitions.iter().zip(&described.offsets) {
            let key = (topic.clone(), info.partition);
            lags.push(PartitionLag {
                topic: topic.clone(),
                partition: info.partition,
                committed: committed.get(&key).copied(),
                log_end: offsets.as_ref().ok().map(|offsets| offsets.high_watermark),
                last_stable: offsets
                    .as_ref()
                    .ok()
                    .map(|offsets| offsets.last_stable_offset),
                member: members.get(&key).cloned(),
            });
        }
    }
    Ok(lags)
}

async fn describe(admin: &Admin, format: Format, group: &str) -> anyhow::Result<()> {
    let description = admin.describe_group(group).await?;
    if description.state == "Dead" {
        bail!("group '{group}' does not exist; `logctl group list` shows the groups there are");
    }
    let lags = partition_lags(admin, &description).await?;
    match format {
        Format::Json => print_json(&json!({
            "group": description.group_id,
            "state": description.state,
            "protocol_type": description.protocol_type,
            "assignor": description.protocol,
            "coordinator": description.coordinator,
            "members": description.members.iter().map(|member| json!({
                "member_id": member.member_id,
                "group_instance_id": member.group_instance_id,
                "client_id": member.client_id,
                "host": member.client_host,
                "assignment": member.assignment.iter().map(|(topic, partition)| json!({"topic": topic, "partition": partition})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "partitions": lags.iter().map(|lag| json!({
                "topic": lag.topic,
                "partition": lag.partition,
                "committed_offset": lag.committed,
                "log_end_offset": lag.log_end,
                "lag": lag.lag(),
                "last_stable_offset": lag.last_stable,
                "stable_lag": lag.stable_lag(),
                "member_id": lag.member,
            })).collect::<Vec<_>>(),
        })),
        Format::Table => {
            say!(
                "group: {}  state: {}  assignor: {}  coordinator: {}  members: {}",
                description.group_id,
                description.state,
                if description.protocol.is_empty() {
                    "-"
                } else {
                    &description.protocol
                },
                description.coordinator,
                description.members.len()
            );
            let clients: BTreeMap<&str, (&str, &str)> = description
                .members
                .iter()
                .map(|member| {
                    (
                        member.member_id.as_str(),
                        (member.client_id.as_str(), member.client_host.as_str()),
                    )
                })
                .collect();
            let rows: Vec<Vec<String>> = lags
                .iter()
                .map(|lag| {
                    let (client_id, host) = lag
                        .member
                        .as_deref()
                        .and_then(|member| clients.get(member).copied())
                        .unwrap_or(("-", "-"));
                    vec![
                        lag.topic.clone(),
                        lag.partition.to_string(),
                        dash(lag.committed),
                        dash(lag.log_end),
                        dash(lag.lag()),
                        dash(lag.last_stable),
                        dash(lag.stable_lag()),
                        lag.member.clone().unwrap_or_else(|| "-".to_string()),
                        client_id.to_string(),
                        host.to_string(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "TOPIC",
                    "PARTITION",
                    "COMMITTED",
                    "LOG-END",
                    "LAG",
                    "STABLE-END",
                    "STABLE-LAG",
                    "MEMBER",
                    "CLIENT-ID",
                    "HOST",
                ],
                &rows,
            );
        }
    }
    Ok(())
}

/// An offset for a table cell; `-` when there is none.
fn dash(value: Option<i64>) -> String {
    value.map_or_else(|| "-".to_string(), |value| value.to_string())
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Earliest,
    Latest,
    Offset(i64),
    Shift(i64),
    /// The first record at or after this time (ms); the end if none.
    Time(i64),
}

async fn reset_offsets(
    admin: &Admin,
    format: Format,
    group: &str,
    topic: &str,
    only: Option<&BTreeSet<i32>>,
    target: Target,
    execute: bool,
) -> anyhow::Result<()> {
    let description = admin.describe_group(group).await?;
    if execute && !description.members.is_empty() {
        bail!(
            "group '{group}' has {} active member(s); stop its consumers before resetting its offsets",
            description.members.len()
        );
    }
    let committed: BTreeMap<(String, i32), i64> =
        admin.group_offsets(group).await?.into_iter().collect();
    let partitions = admin.describe_topic(topic).await?;
    if let Some(missing) = only.and_then(|only| {
        only.iter().find(|&&wanted| {
            !partitions
                .topic
                .partitions
                .iter()
                .any(|p| p.partition == wanted)
        })
    }) {
        return Err(Error::UnknownPartition {
            topic: topic.to_string(),
            partition: *missing,
        }
        .into());
    }
    let mut plan = Vec::new();
    for (partition, offsets) in partitions.topic.partitions.iter().zip(&partitions.offsets) {
        if only.is_some_and(|only| !only.contains(&partition.partition)) {
            continue;
        }
        let offsets = offsets.as_ref().map_err(|error| {
            anyhow::anyhow!(
                "cannot read the offsets of {topic}-{}: {error}",
                partition.partition
            )
        })?;
        let (start, end) = (offsets.log_start_offset, offsets.high_watermark);
        let current = committed
            .get(&(topic.to_string(), partition.partition))
            .copied();
        let new = match target {
            Target::Earliest => start,
            Target::Latest => end,
            Target::Offset(offset) => offset,
            Target::Shift(shift) => current.unwrap_or(start).saturating_add(shift),
            Target::Time(timestamp_ms) => admin
                .offset_for_time(topic, partition.partition, timestamp_ms)
                .await?
                .unwrap_or(end),
        }
        .clamp(start, end);
        plan.push((partition.partition, current, new));
    }
    if execute {
        let offsets: Vec<((String, i32), i64)> = plan
            .iter()
            .map(|&(partition, _, new)| ((topic.to_string(), partition), new))
            .collect();
        admin.alter_group_offsets(group, &offsets).await?;
    }
    match format {
        Format::Json => print_json(&json!({
            "group": group,
            "topic": topic,
            "executed": execute,
            "partitions": plan.iter().map(|(partition, current, new)| json!({
                "partition": partition,
                "current_offset": current,
                "new_offset": new,
            })).collect::<Vec<_>>(),
        })),
        Format::Table => {
            let rows: Vec<Vec<String>> = plan
                .iter()
                .map(|(partition, current, new)| {
                    vec![
                        topic.to_string(),
                        partition.to_string(),
                        dash(*current),
                        new.to_string(),
                    ]
                })
                .collect();
            print_table(&["TOPIC", "PARTITION", "CURRENT", "NEW"], &rows);
            if execute {
                say!("committed the new offsets of group {group}");
            } else {
                say!("dry run: nothing changed; add --execute to commit these offsets");
            }
        }
    }
    Ok(())
}
