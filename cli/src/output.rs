//! Output shared by every command: the format switch, aligned tables, and
//! error sentences that say what to do.

use strata_client::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Prints `rows` under `headers` with columns padded to the widest cell.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|header| header.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

pub fn ids(ids: &[i32]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// One sentence: what failed, why, and what to do about it.
pub fn explain(error: &anyhow::Error, bootstrap: &str) -> String {
    match error.downcast_ref::<Error>() {
        Some(Error::Unreachable { source, .. }) => format!(
            "cannot reach a broker at {bootstrap} ({source}); is logd running there? Point --bootstrap-server or STRATA_BROKERS at it."
        ),
        Some(Error::UnknownTopic(topic)) => {
            format!("topic '{topic}' does not exist; `logctl topic list` shows the topics there are.")
        }
        Some(Error::UnknownPartition { topic, partition }) => format!(
            "topic '{topic}' has no partition {partition}; `logctl topic describe {topic}` shows its partitions."
        ),
        _ => format!("{error:#}"),
    }
}
