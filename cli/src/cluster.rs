//! `logctl cluster info`.

use serde_json::json;
use strata_client::Admin;

use crate::output::{print_json, print_table, say, Format};

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Brokers, their addresses and state, the controller and its Raft quorum
    /// (leader, term, applied metadata offset, voters).
    Info,
}

pub async fn run(bootstrap: &str, format: Format, command: ClusterCommand) -> anyhow::Result<()> {
    let ClusterCommand::Info = command;
    let admin = Admin::connect(bootstrap).await?;
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
