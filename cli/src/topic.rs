//! `logctl topic create|list|describe|alter|delete`.

use anyhow::bail;
use serde_json::json;
use strata_client::{Admin, Error, NewTopic, ResponseError};

use crate::connect::Connect;
use crate::output::{ids, print_json, print_table, say, Format};

#[derive(Debug, clap::Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// The new topic's name.
        name: String,
        /// How many partitions it has (more can be added later).
        #[arg(short, long, default_value_t = 1)]
        partitions: i32,
        /// How many brokers hold a copy of each partition.
        #[arg(short = 'r', long, default_value_t = 1)]
        replication_factor: i16,
        /// A topic config, KEY=VALUE; repeat for more.
        #[arg(short, long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Succeed when the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List topics.
    List,
    /// Partitions with leader, replicas, ISR, leader epoch and offsets; config overrides.
    Describe {
        /// The topic to describe.
        name: String,
    },
    /// Add partitions or change configs.
    Alter {
        /// The topic to change.
        name: String,
        /// The new partition count (only growing is possible).
        #[arg(long, required_unless_present_any = ["configs", "delete_configs"])]
        partitions: Option<i32>,
        /// Set a config, KEY=VALUE; repeat for more.
        #[arg(short, long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Remove a config override, back to the default; repeat for more.
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
    },
    /// Delete a partition's records below an offset, for good (consumers
    /// then start at that offset).
    DeleteRecords {
        /// The topic whose records go.
        name: String,
        /// Only this partition (default: every partition).
        #[arg(short, long)]
        partition: Option<i32>,
        /// Delete every record below OFFSET; "end" deletes everything
        /// consumers can read now.
        #[arg(long, value_name = "OFFSET", value_parser = parse_before)]
        before: i64,
    },
    /// Move partitions to other brokers or change how many replicas they
    /// have, while they serve. The new replicas copy the log; the old ones
    /// leave (and delete their copy) once every new one is in sync.
    Reassign {
        /// The topic whose partitions move.
        name: String,
        /// Only this partition (default: every partition).
        #[arg(short, long)]
        partition: Option<i32>,
        /// The new replicas, BROKER,BROKER,...; the first is the preferred
        /// leader.
        #[arg(
            long,
            value_name = "BROKERS",
            value_delimiter = ',',
            required_unless_present = "cancel"
        )]
        replicas: Vec<i32>,
        /// Cancel the move under way: back to the original replicas.
        #[arg(long, conflicts_with = "replicas")]
        cancel: bool,
        /// Wait until the move completes, printing its progress.
        #[arg(long)]
        wait: bool,
        /// Cap how fast the new replicas copy from each leader, in bytes
        /// per second (suffixes KB, MB, GB, KiB, MiB, GiB), so the copy does
        /// not crowd out producers and consumers. Sets the topic's
        /// replication.throttled.rate; --wait removes it once the move is
        /// done (otherwise: topic alter NAME --delete-config
        /// replication.throttled.rate).
        #[arg(long, value_name = "RATE", value_parser = parse_rate, conflicts_with = "cancel")]
        throttle: Option<u64>,
    },
    /// Partitions whose replicas are moving.
    Reassignments,
    /// Delete a topic and its data.
    Delete {
        /// The topic to delete.
        name: String,
    },
}

/// `only`, or else every partition of `topic`.
pub(crate) async fn partition_indexes(
    admin: &Admin,
    topic: &str,
    only: Option<i32>,
) -> anyhow::Result<Vec<i32>> {
    Ok(match only {
        Some(partition) => vec![partition],
        None => admin
            .describe_topic(topic)
            .await?
            .topic
            .partitions
            .iter()
            .map(|partition| partition.partition)
            .collect(),
    })
}

/// The topic config `topic reassign --throttle` sets.
const THROTTLE_KEY: &str = "replication.throttled.rate";

/// Bytes per second: a number with an optional decimal (KB, MB, GB) or
/// binary (KiB, MiB, GiB) suffix.
fn parse_rate(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a rate: a number of bytes per second, like 50MB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit '{other}': use KB, MB, GB, KiB, MiB or GiB"
            ))
        }
    };
    match number.checked_mul(scale) {
        Some(0) => Err("the rate must be above 0".into()),
        Some(rate) => Ok(rate),
        None => Err(format!("'{text}' is too large")),
    }
}

/// An offset, or "end" (-1: the high watermark).
fn parse_before(text: &str) -> Result<i64, String> {
    match text {
        "end" => Ok(-1),
        _ => text
            .parse::<i64>()
            .ok()
            .filter(|offset| *offset >= 0)
            .ok_or_else(|| format!("'{text}' is not an offset or end")),
    }
}

fn parse_config(pair: &str) -> anyhow::Result<(String, String)> {
    crate::output::key_value(pair, "config").map_err(anyhow::Error::msg)
}

pub async fn run(connect: &Connect, format: Format, command: TopicCommand) -> anyhow::Result<()> {
    let admin = connect.admin().await?;
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            if_not_exists,
        } => {
            let mut topic = NewTopic::new(&name, partitions, replication_factor);
            for pair in &configs {
                let (key, value) = parse_config(pair)?;
                topic = topic.config(&key, &value);
            }
            let created = match admin.create_topic(&topic).await {
                Ok(()) => true,
                Err(Error::Broker {
                    error: ResponseError::TopicAlreadyExists,
                    ..
                }) if if_not_exists => false,
                Err(error) => return Err(error.into()),
            };
            match format {
                Format::Json => print_json(&json!({"topic": name, "created": created})),
                Format::Table if created => {
                    say!("created topic {name} with {partitions} partitions")
                }
                Format::Table => say!("topic {name} already exists"),
            }
        }
        TopicCommand::List => {
            let topics = admin.list_topics().await?;
            match format {
                Format::Json => print_json(&json!(topics
                    .iter()
                    .map(|topic| json!({
                        "name": topic.name,
                        "partitions": topic.partitions.len(),
                        "replication_factor": topic.partitions.first().map_or(0, |p| p.replicas.len()),
                        "internal": topic.internal,
                    }))
                    .collect::<Vec<_>>())),
                Format::Table => {
                    let rows: Vec<Vec<String>> = topics
                        .iter()
                        .map(|topic| {
                            vec![
                                topic.name.clone(),
                                topic.partitions.len().to_string(),
                                topic.partitions.first().map_or(0, |p| p.replicas.len()).to_string(),
                            ]
                        })
                        .collect();
                    print_table(&["TOPIC", "PARTITIONS", "REPLICAS"], &rows);
                }
            }
        }
        TopicCommand::Describe { name } => describe(&admin, format, &name).await?,
        TopicCommand::Alter {
            name,
            partitions,
            configs,
            delete_configs,
        } => {
            if let Some(partitions) = partitions {
                admin.create_partitions(&name, partitions).await?;
            }
            let mut changes = Vec::new();
            for pair in &configs {
                let (key, value) = parse_config(pair)?;
                changes.push((key, Some(value)));
            }
            changes.extend(delete_configs.into_iter().map(|key| (key, None)));
            if !changes.is_empty() {
                admin.alter_configs(&name, &changes).await?;
            }
            match format {
                Format::Json => print_json(&json!({"topic": name, "altered": true})),
                Format::Table => say!("altered topic {name}"),
            }
        }
        TopicCommand::DeleteRecords {
            name,
            partition,
            before,
        } => {
            let partitions: Vec<(i32, i64)> = partition_indexes(&admin, &name, partition)
                .await?
                .into_iter()
                .map(|partition| (partition, before))
                .collect();
            let starts = admin.delete_records(&name, &partitions).await?;
            match format {
                Format::Json => print_json(&json!(starts
                    .iter()
                    .map(|(partition, start)| json!({"topic": name, "partition": partition, "log_start_offset": start}))
                    .collect::<Vec<_>>())),
                Format::Table => {
                    let rows: Vec<Vec<String>> = starts
                        .iter()
                        .map(|(partition, start)| vec![name.clone(), partition.to_string(), start.to_string()])
                        .collect();
                    print_table(&["TOPIC", "PARTITION", "LOG-START"], &rows);
                }
            }
        }
        TopicCommand::Reassign {
            name,
            partition,
            replicas,
            cancel,
            wait,
            throttle,
        } => {
            let target = (!cancel).then_some(replicas);
            if let Some(rate) = throttle {
                let change = (THROTTLE_KEY.to_string(), Some(rate.to_string()));
                admin.alter_configs(&name, &[change]).await?;
            }
            let partitions = partition_indexes(&admin, &name, partition).await?;
            let moves: Vec<(i32, Option<Vec<i32>>)> = partitions
                .iter()
                .map(|&partition| (partition, target.clone()))
                .collect();
            admin.reassign_partitions(&name, &moves).await?;
            if wait {
                wait_for_reassignment(&admin, &name, format).await?;
                if throttle.is_some() {
                    admin
                        .alter_configs(&name, &[(THROTTLE_KEY.to_string(), None)])
                        .await?;
                }
            }
            match format {
                Format::Json => print_json(
                    &json!({"topic": name, "partitions": partitions, "completed": wait, "cancelled": cancel}),
                ),
                Format::Table if cancel => say!("cancelled the reassignment of {name}"),
                Format::Table if wait => say!("reassigned {name}"),
                Format::Table => {
                    say!("reassigning {name}; `logctl topic reassignments` shows progress")
                }
            }
        }
        TopicCommand::Reassignments => {
            let moving = admin.list_reassignments().await?;
            match format {
                Format::Json => print_json(&json!(moving
                    .iter()
                    .map(|moving| json!({
                        "topic": moving.topic,
                        "partition": moving.partition,
                        "replicas": moving.replicas,
                        "adding": moving.adding,
                        "removing": moving.removing,
                    }))
                    .collect::<Vec<_>>())),
                Format::Table => {
                    let rows: Vec<Vec<String>> = moving
                        .iter()
                        .map(|moving| {
                            vec![
                                moving.topic.clone(),
                                moving.partition.to_string(),
                                ids(&moving.replicas),
                                ids(&moving.adding),
                                ids(&moving.removing),
                            ]
                        })
                        .collect();
                    print_table(
                        &["TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING"],
                        &rows,
                    );
                }
            }
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await?;
            match format {
                Format::Json => print_json(&json!({"topic": name, "deleted": true})),
                Format::Table => say!("deleted topic {name}"),
            }
        }
    }
    Ok(())
}

/// Polls until no partition of `topic` moves; a line a second on stderr
/// (table output) saying how far the new replicas are.
async fn wait_for_reassignment(admin: &Admin, topic: &str, format: Format) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    loop {
        let moving: Vec<_> = admin
            .list_reassignments()
            .await?
            .into_iter()
            .filter(|moving| moving.topic == topic)
            .collect();
        if moving.is_empty() {
            return Ok(());
        }
        // A move waits for every new replica: one on a broker that is down
        // would keep this waiting until the broker returns.
        let alive = admin.describe_cluster().await?.brokers;
        if let Some(down) = moving
            .iter()
            .flat_map(|moving| &moving.adding)
            .find(|broker| {
                !alive
                    .iter()
                    .any(|alive| alive.id == **broker && !alive.fenced)
            })
        {
            bail!("broker {down} is down: the move waits for it; `logctl topic reassign {topic} --cancel` returns to the original replicas");
        }
        if format == Format::Table {
            let described = admin.describe_topic(topic).await?;
            let waiting: Vec<String> = moving
                .iter()
                .map(|moving| {
                    let isr = described
                        .topic
                        .partitions
                        .iter()
                        .find(|info| info.partition == moving.partition)
                        .map(|info| info.isr.clone())
                        .unwrap_or_default();
                    let synced = moving
                        .adding
                        .iter()
                        .filter(|broker| isr.contains(broker))
                        .count();
                    format!(
                        "{}: {synced}/{} new replicas in sync",
                        moving.partition,
                        moving.adding.len()
                    )
                })
                .collect();
            eprintln!(
                "{:>4.0} s  {} partition(s) moving  {}",
                started.elapsed().as_secs_f64(),
                moving.len(),
                waiting.join("  ")
            );
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

async fn describe(admin: &Admin, format: Format, name: &str) -> anyhow::Result<()> {
    let description = admin.describe_topic(name).await?;
    let overrides: Vec<(String, String)> = admin
        .describe_configs(name)
        .await?
        .into_iter()
        .filter(|entry| !entry.is_default)
        .map(|entry| (entry.name, entry.value.unwrap_or_default()))
        .collect();
    let topic = &description.topic;
    match format {
        Format::Json => {
            let partitions: Vec<serde_json::Value> = topic
                .partitions
                .iter()
                .zip(&description.offsets)
                .map(|(partition, offsets)| {
                    let mut value = json!({
                        "partition": partition.partition,
                        "leader": partition.leader,
                        "leader_epoch": partition.leader_epoch,
                        "replicas": partition.replicas,
                        "isr": partition.isr,
                    });
                    match offsets {
                        Ok(offsets) => {
                            value["log_start_offset"] = json!(offsets.log_start_offset);
                            value["high_watermark"] = json!(offsets.high_watermark);
                        }
                        Err(error) => value["error"] = json!(error),
                    }
                    value
                })
                .collect();
            print_json(&json!({
                "name": topic.name,
                "topic_id": topic.topic_id,
                "partitions": partitions,
                "configs": overrides.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            }));
        }
        Format::Table => {
            say!(
                "topic: {}  id: {}  partitions: {}",
                topic.name,
                topic.topic_id,
                topic.partitions.len()
            );
            if !overrides.is_empty() {
                let configs: Vec<String> = overrides
                    .iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect();
                say!("configs: {}", configs.join(" "));
            }
            let rows: Vec<Vec<String>> = topic
                .partitions
                .iter()
                .zip(&description.offsets)
                .map(|(partition, offsets)| {
                    let (start, high_watermark) = match offsets {
                        Ok(offsets) => (
                            offsets.log_start_offset.to_string(),
                            offsets.high_watermark.to_string(),
                        ),
                        Err(_) => ("?".to_string(), "?".to_string()),
                    };
                    vec![
                        partition.partition.to_string(),
                        partition
                            .leader
                            .map_or("none".to_string(), |leader| leader.to_string()),
                        partition.leader_epoch.to_string(),
                        ids(&partition.replicas),
                        ids(&partition.isr),
                        start,
                        high_watermark,
                    ]
                })
                .collect();
            print_table(
                &[
                    "PARTITION",
                    "LEADER",
                    "EPOCH",
                    "REPLICAS",
                    "ISR",
                    "LOG-START",
                    "HIGH-WATERMARK",
                ],
                &rows,
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn rates_take_decimal_and_binary_units() {
        assert_eq!(parse_rate("1500"), Ok(1500));
        assert_eq!(parse_rate("50MB"), Ok(50_000_000));
        assert_eq!(parse_rate("2 MiB"), Ok(2 << 20));
        assert_eq!(parse_rate("1gb"), Ok(1_000_000_000));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("5 parsecs").is_err());
        assert!(parse_rate("99999999999999GiB").is_err());
    }
}
