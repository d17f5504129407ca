//! `logctl`: administer a Strata cluster, produce and consume from a shell.
//!
//! Every command talks to brokers over the Kafka protocol through
//! `strata-client`; nothing here links the broker. Errors are one sentence on
//! stderr and a non-zero exit.

mod cluster;
mod connect;
mod consume;
mod group;
mod output;
mod produce;
mod producer;
mod saga;
mod topic;
mod txn;
mod user;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::output::Format;

#[derive(Debug, Parser)]
#[command(
    name = "logctl",
    version,
    about = "Operate a Strata cluster",
    propagate_version = true
)]
struct Cli {
    #[command(flatten)]
    connect: connect::ConnectOptions,
    /// Output format: human-readable tables or JSON.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Produce one record per line of stdin.
    Produce(produce::ProduceArgs),
    /// Print records of a topic.
    Consume(consume::ConsumeArgs),
    /// List, describe, reset and delete consumer groups.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// List the idempotent producers a topic's partitions know.
    #[command(subcommand)]
    Producer(producer::ProducerCommand),
    /// List, describe and abort transactions.
    #[command(subcommand)]
    Txn(txn::TxnCommand),
    /// List sagas by state and show one saga's step timeline.
    #[command(subcommand)]
    Saga(saga::SagaCommand),
    /// Describe the cluster.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Create, list and delete SASL/SCRAM users.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Print a shell completion script.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "logctl", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let bootstrap = cli.connect.bootstrap.clone();
    let result = runtime.block_on(async {
        let connect = &connect::Connect::from_options(&cli.connect)?;
        let format = cli.format;
        match cli.command {
            Command::Topic(command) => topic::run(connect, format, command).await,
            Command::Produce(args) => produce::run(connect, format, args).await,
            Command::Consume(args) => consume::run(connect, format, args).await,
            Command::Group(command) => group::run(connect, format, command).await,
            Command::Producer(command) => producer::run(connect, format, command).await,
            Command::Txn(command) => txn::run(connect, format, command).await,
            Command::Saga(command) => saga::run(connect, format, command).await,
            Command::Cluster(command) => cluster::run(connect, format, command).await,
            Command::User(command) => user::run(connect, format, command).await,
            Command::Completions { .. } => unreachable!("handled before the runtime starts"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if output::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("logctl: {}", output::explain(&error, &bootstrap));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument of every command says what it is for.
    #[test]
    fn every_flag_has_help() {
        let missing = strata_tests::arguments_without_help(&Cli::command());
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }
}
