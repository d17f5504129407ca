//! `logd`: the Strata broker. With no flags it is a complete single-node
//! cluster: node 1, data in `./data`, Kafka clients on 127.0.0.1:9092, the
//! controller on 127.0.0.1:9093.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Parser;
use serde::Deserialize;
use strata_broker::{Broker, BrokerConfig};
use strata_protocol::alloc::ReserveLargeAllocator;
use tracing_subscriber::EnvFilter;

/// Hostile frames must not abort the process (see `strata_protocol::alloc`).
#[global_allocator]
static ALLOCATOR: ReserveLargeAllocator = ReserveLargeAllocator;

/// Every flag is also a key of the TOML file given with --config; flags win.
#[derive(Debug, Default, Parser, Deserialize)]
#[command(name = "logd", version, about = "The Strata broker")]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Flags {
    /// A TOML file with any of the settings below.
    #[arg(long, value_name = "FILE.toml")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// This broker's id [default: 1].
    #[arg(long, value_name = "N")]
    node_id: Option<i32>,
    /// Where partitions and the controller's Raft log live [default: ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address for Kafka clients [default: 127.0.0.1:9092].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Address clients are told to connect to [default: the listen address].
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Address of the controller listener [default: 127.0.0.1:9093].
    #[arg(long, value_name = "ADDR")]
    controller_listen: Option<SocketAddr>,
    /// Controller voters as ID@HOST:PORT,... [default: this broker alone].
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    controllers: Option<String>,
    /// Address for Prometheus `/metrics` [default: 127.0.0.1:9094].
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Log level or filter (also RUST_LOG) [default: info].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

impl Flags {
    /// Fills what the command line left unset from `file`.
    fn or(self, file: Flags) -> Flags {
        Flags {
            config: self.config,
            node_id: self.node_id.or(file.node_id),
            data_dir: self.data_dir.or(file.data_dir),
            listen: self.listen.or(file.listen),
            advertise: self.advertise.or(file.advertise),
            controller_listen: self.controller_listen.or(file.controller_listen),
            controllers: self.controllers.or(file.controllers),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            log_level: self.log_level.or(file.log_level),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let flags = match &flags.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            let file: Flags = toml::from_str(&text)
                .with_context(|| format!("invalid config file {}", path.display()))?;
            flags.or(file)
        }
        None => flags,
    };
    let filter =
        match (&flags.log_level, std::env::var("RUST_LOG")) {
            (Some(level), _) => EnvFilter::try_new(level)
                .with_context(|| format!("invalid --log-level '{level}'"))?,
            (None, Ok(filter)) => EnvFilter::try_new(&filter)
                .with_context(|| format!("invalid RUST_LOG '{filter}'"))?,
            (None, Err(_)) => EnvFilter::new("info"),
        };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let mut config = BrokerConfig::single_node(
        flags
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("data")),
    );
    config.node_id = flags.node_id.unwrap_or(config.node_id);
    config.listen = flags.listen.unwrap_or(config.listen);
    config.advertise = flags.advertise.clone();
    config.controller_listen = flags.controller_listen.unwrap_or(config.controller_listen);
    config.metrics_listen = flags.metrics_listen.or(config.metrics_listen);
    if let Some(controllers) = &flags.controllers {
        let only_self = format!("{}@", config.node_id);
        if controllers.contains(',') || !controllers.starts_with(&only_self) {
            bail!(
                "--controllers '{controllers}': this version runs a single controller voter, which must be this broker \
                 ({only_self}HOST:PORT); multi-voter clusters are not supported yet"
            );
        }
    }

    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let broker = Broker::start(config)
            .await
            .context("cannot start the broker")?;
        wait_for_signal().await?;
        tracing::info!("shutting down");
        broker.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
