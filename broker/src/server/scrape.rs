//! The `/metrics` endpoint on `--metrics-listen`: the registry's counters
//! (see `metrics`) and gauges read at scrape time from the controller (the
//! quorum, fenced brokers), the replicas (partitions, lag, high watermarks,
//! last stable offsets)
//! and the group coordinator (committed offsets and consumer lag).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use strata_protocol::transport::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::controller::client::ControllerClient;
use crate::group::{CommittedOffset, GroupCoordinator};
use crate::limits;
use crate::metrics::{escape, Metrics};
use crate::replica::replica_manager::ReplicaManager;
use crate::security::tls::{Peers, Tls};

/// The Prometheus text exposition of everything. `committed` holds the
/// committed offsets of the groups this broker coordinates.
fn render(
    metrics: &Metrics,
    controller: &ControllerClient,
    replicas: &ReplicaManager,
    committed: &[CommittedOffset],
) -> String {
    let mut out = String::new();
    metrics.render_into(&mut out);
    // The quorum as its leader last reported it (-1 before it has).
    let quorum = controller.quorum();
    let (term, leader, applied) = quorum.map_or((-1, -1, -1), |quorum| {
        (
            quorum.term as i64,
            quorum.leader as i64,
            quorum.applied_end as i64,
        )
    });
    let metadata = controller.metadata();
    let fenced = metadata
        .brokers
        .values()
        .filter(|broker| broker.fenced)
        .count();
    let session_alive = *controller.session().borrow() as u8;
    let _ = write!(
        out,
        "# TYPE strata_raft_term gauge\nstrata_raft_term {term}\n\
         # TYPE strata_raft_leader gauge\nstrata_raft_leader {leader}\n\
         # TYPE strata_raft_applied_index gauge\nstrata_raft_applied_index {applied}\n\
         # TYPE strata_metadata_version gauge\nstrata_metadata_version {}\n\
         # TYPE strata_brokers_fenced gauge\nstrata_brokers_fenced {fenced}\n\
         # TYPE strata_controller_session_alive gauge\nstrata_controller_session_alive {session_alive}\n",
        metadata.metadata_version
    );
    let partitions = replicas.all();
    let leading = partitions
        .iter()
        .filter(|partition| partition.leader_epoch().is_some())
        .count();
    let _ = writeln!(
        out,
        "# TYPE strata_partitions gauge\nstrata_partitions {}\n\
         # TYPE strata_partitions_leading gauge\nstrata_partitions_leading {leading}",
        partitions.len()
    );
    // Partitions this broker leads whose ISR lacks some replica.
    let under_replicated = partitions
        .iter()
        .filter(|partition| partition.leader_epoch().is_some())
        .filter_map(|partition| {
            let topic = metadata.topics.get(&partition.topic)?;
            topic.partitions.get(partition.index as usize)
        })
        .filter(|assignment| assignment.isr.len() < assignment.replicas.len())
        .count();
    let _ = writeln!(
        out,
        "# TYPE strata_under_replicated_partitions gauge\nstrata_under_replicated_partitions {under_replicated}"
    );
    // Per partition led here: offsets the furthest-behind follower trails.
    out.push_str("# TYPE strata_follower_lag_records gauge\n");
    for partition in &partitions {
        if let Some(lag) = partition.follower_lag() {
            let _ = writeln!(
                out,
                "strata_follower_lag_records{{topic=\"{}\",partition=\"{}\"}} {lag}",
                partition.topic, partition.index
            );
        }
    }
    // What consumers can read of each partition led here: read_uncommitted
    // up to the high watermark, read_committed up to the last stable
    // offset; the gap between them is what open transactions hold back.
    let led: Vec<_> = partitions
        .iter()
        .filter(|partition| partition.leader_epoch().is_some())
        .map(|partition| {
            // The stable offset first: it is at most the high watermark
            // it was computed from, which only grows, so the lag is never
            // negative.
            let stable = partition.last_stable_offset();
            let high_watermark = partition.high_watermark();
            (
                format!(
                    "topic=\"{}\",partition=\"{}\"",
                    partition.topic, partition.index
                ),
                [high_watermark, stable, high_watermark - stable],
            )
        })
        .collect();
    gauges(
        &mut out,
        [
            "strata_partition_high_watermark",
            "strata_partition_last_stable_offset",
            "strata_partition_stable_lag_records",
        ],
        &led,
    );
    // Per group this broker coordinates: the committed offset of each
    // partition (elsewhere, join with strata_partition_high_watermark).
    out.push_str("# TYPE strata_consumer_group_committed_offset gauge\n");
    for committed in committed {
        let _ = writeln!(
            out,
            "strata_consumer_group_committed_offset{{group=\"{}\",topic=\"{}\",partition=\"{}\"}} {}",
            escape(&committed.group),
            committed.topic,
            committed.partition,
            committed.offset
        );
    }
    // A group's lag where a replica here knows the partition's end: to the
    // high watermark (what read_uncommitted members have left) and to the
    // last stable offset (what read_committed members can read now).
    let lags: Vec<_> = committed
        .iter()
        .filter_map(|committed| {
            let partition = replicas.partition(&committed.topic, committed.partition)?;
            Some((
                format!(
                    "group=\"{}\",topic=\"{}\",partition=\"{}\"",
                    escape(&committed.group),
                    committed.topic,
                    committed.partition
                ),
                [
                    (partition.high_watermark() - committed.offset).max(0),
                    (partition.last_stable_offset() - committed.offset).max(0),
                ],
            ))
        })
        .collect();
    gauges(
        &mut out,
        [
            "strata_consumer_group_lag_records",
            "strata_consumer_group_stable_lag_records",
        ],
        &lags,
    );
    out
}

/// Writes one gauge family per name in `metrics`, each with a sample per
/// row: the row's labels and its value at the family's index.
fn gauges<const N: usize>(out: &mut String, metrics: [&str; N], rows: &[(String, [i64; N])]) {
    for (index, metric) in metrics.iter().enumerate() {
        let _ = writeln!(out, "# TYPE {metric} gauge");
        for (labels, values) in rows {
            let _ = writeln!(out, "{metric}{{{labels}}} {}", values[index]);
        }
    }
}

/// Serves `GET /metrics` until `shutdown`, over TLS (HTTPS) with `tls`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    metrics: Arc<Metrics>,
    controller: ControllerClient,
    replicas: Arc<ReplicaManager>,
    groups: Arc<GroupCoordinator>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let tls = tls.clone();
        let (metrics, controller, replicas, groups) = (
            Arc::clone(&metrics),
            controller.clone(),
            Arc::clone(&replicas),
            Arc::clone(&groups),
        );
        // Rendered for a complete GET /metrics only, off the accept loop.
        tokio::spawn(async move {
            let read = async {
                let mut stream = match tls {
                    None => Stream::Tcp(stream),
                    Some(tls) => Stream::TlsServer(Box::new(
                        tls.acceptor(Peers::Anyone).accept(stream).await?,
                    )),
                };
                let head = read_head(&mut stream).await?;
                Ok::<_, std::io::Error>((stream, head))
            };
            let read = tokio::time::timeout(Duration::from_secs(5), read).await;
            let Ok(Ok((mut stream, request))) = read else {
                return;
            };
            let request = String::from_utf8_lossy(&request);
            let response = if request.starts_with("GET /metrics ") {
                let committed = groups.committed_offsets().await;
                let body = render(&metrics, &controller, &replicas, &committed);
                format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
            } else {
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_string()
            };
            // Shut down: TLS sends its close_notify (a no-op otherwise).
            let sent = async {
                stream.write_all(response.as_bytes()).await?;
                stream.shutdown().await
            };
            if let Err(error) = sent.await {
                debug!(%error, "metrics response not sent");
            }
        });
    }
}

/// Reads an HTTP request head: up to the blank line that ends it, the peer
/// closing, or `limits::METRICS_REQUEST_BYTES_MAX`. A client may send the request line
/// in several writes; answering after the first would cut it off.
async fn read_head(stream: &mut Stream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n")
        && head.len() < limits::METRICS_REQUEST_BYTES_MAX
    {
        let len = stream.read(&mut chunk).await?;
        if len == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..len]);
    }
    Ok(head)
}
