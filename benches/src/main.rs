//! `logbench`: drives a Strata (or Kafka) cluster with the pure-Rust client
//! and reports throughput and latency.
//!
//! - `produce`: latency of each send, from the call to its acknowledgement.
//! - `consume`: latency of each poll that returned records.
//! - `e2e`: records are produced at a fixed rate and each carries the time it
//!   was *scheduled* to be sent; latency is from that time to the consumer's
//!   receipt, so a stalled producer cannot hide its stall (no coordinated
//!   omission).

mod consume;
mod e2e;
mod produce;
mod report;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata_client::{Acks, Admin, ClientConfig, ConnectOptions, NewTopic};

#[derive(Debug, Parser)]
#[command(name = "logbench", version, about = "Load generator for Strata")]
struct Cli {
    /// Bootstrap brokers, TLS and SASL.
    #[command(flatten)]
    connect: ConnectOptions,
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Also write the latency distribution to FILE in HdrHistogram's
    /// percentile format (milliseconds), as its plotter reads it.
    #[arg(long, global = true, value_name = "FILE")]
    histogram: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Produce MESSAGES records of BYTES each as fast as acknowledgements allow.
    Produce(produce::ProduceArgs),
    /// Read MESSAGES records from the start of the topic.
    Consume(consume::ConsumeArgs),
    /// Produce at a fixed rate and consume at once; report end-to-end latency.
    E2e(e2e::E2eArgs),
}

/// `--create -p N -r R`: make the topic before the run.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// Create the topic first (succeeds if it exists).
    #[arg(long)]
    create: bool,
    /// Partitions of the topic created.
    #[arg(short = 'p', long, default_value_t = 1)]
    partitions: i32,
    /// Replication factor of the topic created.
    #[arg(short = 'r', long, default_value_t = 1)]
    replication_factor: i16,
}

impl CreateArgs {
    async fn apply(&self, client: &ClientConfig, topic: &str) -> anyhow::Result<()> {
        if !self.create {
            return Ok(());
        }
        let admin = Admin::with_config(client.clone()).await?;
        match admin
            .create_topic(&NewTopic::new(
                topic,
                self.partitions,
                self.replication_factor,
            ))
            .await
        {
            Ok(())
            | Err(strata_client::Error::Broker {
                error: strata_client::ResponseError::TopicAlreadyExists,
                ..
            }) => {}
            Err(error) => return Err(error.into()),
        }
        admin
            .wait_for_leaders(topic, std::time::Duration::from_secs(30))
            .await?;
        Ok(())
    }
}

pub fn parse_acks(text: &str) -> Result<Acks, String> {
    match text {
        "0" => Ok(Acks::None),
        "1" => Ok(Acks::Leader),
        "all" | "-1" => Ok(Acks::All),
        _ => Err(format!("'{text}' is not 0, 1 or all")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        let client = &cli.connect.client_config("logbench")?;
        match cli.command {
            Command::Produce(args) => produce::run(client, args).await,
            Command::Consume(args) => consume::run(client, args).await,
            Command::E2e(args) => e2e::run(client, args).await,
        }
    });
    match result {
        Ok(report) => {
            if let Some(path) = &cli.histogram {
                if let Err(error) = report.write_histogram(path) {
                    eprintln!("logbench: cannot write {}: {error}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            report.print(cli.json);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("logbench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument of every mode says what it is for.
    #[test]
    fn every_flag_has_help() {
        let missing = strata_tests::arguments_without_help(&Cli::command());
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }
}
