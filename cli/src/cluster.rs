//! `logctl cluster info | elect-leaders | log-dirs`.

use anyhow::bail;
use serde_json::json;
use strata_client::{Admin, ElectionOutcome};

use crate::connect::Connect;
use crate::output::{print_json, print_table, say, Format};
use crate::topic::partition_indexes;

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Brokers, their addresses and state, the controller and its Raft quorum
    /// (leader, term, applied metadata offset, voters).
    Info,
    /// Give partitions back to their preferred replica (the first of their
    /// replicas), e.g. after a broker returned.
    ElectLeaders {
        /// Only this topic's partitions (default: every topic).
        #[arg(short, long)]
        topic: Option<String>,
        /// Only this partition of the topic.
        #[arg(short, long, requires = "topic")]
        partition: Option<i32>,
        /// Elect any live replica, even one out of sync, where the topic has
        /// unclean.leader.election.enable=true: what only the in-sync
        /// replicas had is lost.
        #[arg(long)]
        unclean: bool,
    },
    /// Each broker's log directory: its disk's size and free space, and
    /// the bytes each replica there holds.
    LogDirs,
}

pub async fn run(connect: &Connect, format: Format, command: ClusterCommand) -> anyhow::Result<()> {
    let admin = connect.admin().await?;
    match command {
        ClusterCommand::Info => info(&admin, format).await,
        ClusterCommand::ElectLeaders {
            topic,
            partition,
            unclean,
        } => elect_leaders(&admin, format, topic, partition, unclean).await,
        ClusterCommand::LogDirs => log_dirs(&admin, format).await,
    }
}

async fn elect_leaders(
    admin: &Admin,
    format: Format,
    topic: Option<String>,
    partition: Option<i32>,
    unclean: bool,
) -> anyhow::Result<()> {
    let partitions: Option<Vec<(String, i32)>> = match topic {
        None => None,
        Some(topic) => Some(
            partition_indexes(admin, &topic, partition)
                .await?
                .into_iter()
                .map(|partition| (topic.clone(), partition))
                .collect(),
        ),
    };
    let elections = admin.elect_leaders(partitions.as_deref(), unclean).await?;
    let outcome = |outcome: &ElectionOutcome| match outcome {
        ElectionOutcome::Elected => "elected".to_string(),
        ElectionOutcome::NotNeeded => "already led by it".to_string(),
        ElectionOutcome::Failed(why) => why.clone(),
    };
    match format {
        Format::Json => print_json(&json!(elections
            .iter()
            .map(|election| json!({
                "topic": election.topic,
                "partition": election.partition,
                "elected": election.outcome == ElectionOutcome::Elected,
                "result": outcome(&election.outcome),
            }))
            .collect::<Vec<_>>())),
        Format::Table => {
            let rows: Vec<Vec<String>> = elections
                .iter()
                .map(|election| {
                    vec![
                        election.topic.clone(),
                        election.partition.to_string(),
                        outcome(&election.outcome),
                    ]
                })
                .collect();
            print_table(&["TOPIC", "PARTITION", "RESULT"], &rows);
        }
    }
    let failed = elections
        .iter()
        .filter(|election| matches!(election.outcome, ElectionOutcome::Failed(_)))
        .count();
    if failed > 0 {
        bail!("{failed} of {} elections failed", elections.len());
    }
    Ok(())
}

async fn log_dirs(admin: &Admin, format: Format) -> anyhow::Result<()> {
    let dirs = admin.describe_log_dirs().await?;
    match format {
        Format::Json => print_json(&json!(dirs
            .iter()
            .map(|dir| json!({
                "broker": dir.broker,
                "log_dir": dir.path,
                "total_bytes": dir.total_bytes,
                "usable_bytes": dir.usable_bytes,
                "replicas": dir.replicas.iter().map(|(topic, partition, bytes)| json!({
                    "topic": topic, "partition": partition, "bytes": bytes,
                })).collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>())),
        Format::Table => {
            let size = |bytes: i64| {
                if bytes < 0 {
                    "-".to_string()
                } else {
                    bytes.to_string()
                }
            };
            let rows: Vec<Vec<String>> = dirs
                .iter()
                .map(|dir| {
                    let held: i64 = dir.replicas.iter().map(|(_, _, bytes)| bytes).sum();
                    vec![
                        dir.broker.to_string(),
                        dir.path.clone(),
                        size(dir.total_bytes),
                        size(dir.usable_bytes),
                        dir.replicas.len().to_string(),
                        held.to_string(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "BROKER",
                    "LOG-DIR",
                    "TOTAL",
                    "USABLE",
                    "REPLICAS",
                    "REPLICA-BYTES",
                ],
                &rows,
            );
            say!("");
            let rows: Vec<Vec<String>> = dirs
                .iter()
                .flat_map(|dir| {
                    dir.replicas.iter().map(|(topic, partition, bytes)| {
                        vec![
                            dir.broker.to_string(),
                            topic.clone(),
                            partition.to_string(),
                            bytes.to_string(),
                        ]
                    })
                })
                .collect();
            print_table(&["BROKER", "TOPIC", "PARTITION", "BYTES"], &rows);
        }
    }
    Ok(())
}

async fn info(admin: &Admin, format: Format) -> anyhow::Result<()> {
    let cluster = admin.describe_cluster().await?;
    let quorum = admin.describe_quorum().await?;
    match format {
        Format::Json => print_json(&json!({
            "cluster_id": cluster.cluster_id,
            "controller_id": cluster.controller_id,
            "quorum": {
                "leader_id": quorum.leader_id,
                "term": quorum.term,
                "metadata_offset": quorum.high_watermark,
                "voters": quorum.voters.iter().map(|(id, log_end_offset)| json!({
                    "id": id,
                    "log_end_offset": log_end_offset,
                })).collect::<Vec<_>>(),
            },
            "brokers": cluster.brokers.iter().map(|broker| json!({
                "id": broker.id,
                "host": broker.host,
                "port": broker.port,
                "rack": broker.rack,
                "state": if broker.fenced { "fenced" } else { "alive" },
            })).collect::<Vec<_>>(),
        })),
        Format::Table => {
            say!("cluster id: {}", cluster.cluster_id);
            say!(
                "controller: {}",
                cluster
                    .controller_id
                    .map_or("none".to_string(), |id| format!("broker {id}"))
            );
            let voters: Vec<String> = quorum.voters.iter().map(|(id, _)| id.to_string()).collect();
            say!(
                "metadata quorum: leader {}, term {}, metadata offset {}, voters {}",
                quorum
                    .leader_id
                    .map_or("none".to_string(), |id| id.to_string()),
                quorum.term,
                quorum.high_watermark,
                voters.join(",")
            );
            let rows: Vec<Vec<String>> = cluster
                .brokers
                .iter()
                .map(|broker| {
                    vec![
                        broker.id.to_string(),
                        format!("{}:{}", broker.host, broker.port),
                        if broker.fenced { "fenced" } else { "alive" }.to_string(),
                        broker.rack.clone().unwrap_or_else(|| "-".to_string()),
                    ]
                })
                .collect();
            print_table(&["BROKER", "ADDRESS", "STATE", "RACK"], &rows);
        }
    }
    Ok(())
}
