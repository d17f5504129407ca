//! Output shared by every command: the format switch, aligned tables, and
//! error sentences that say what to do.
//!
//! Everything goes to stdout through [`say!`], which ends the process
//! quietly when the reader went away (`logctl topic list | head -1`).

use std::io::Write;

use strata_client::{Error, ResponseError};

/// `println!` that exits with success once stdout is a closed pipe.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}
pub(crate) use say;

pub fn write_line(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(error) = out.write_fmt(line).and_then(|()| out.write_all(b"\n")) {
        exit_on_write_error(&error);
    }
}

/// The reader of stdout went away: stop, successfully, as `head` expects.
/// Any other write error ends the process with it.
pub fn exit_on_write_error(error: &std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("logctl: cannot write to stdout: {error}");
    std::process::exit(1);
}

/// Whether `error` is stdout's reader having gone away.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

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
        say!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn print_json(value: &serde_json::Value) {
    say!("{value}");
}

/// `KEY=VALUE` as a pair; `what` names it in the error.
pub fn key_value(text: &str, what: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{what} '{text}' is not KEY=VALUE")),
    }
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
        Some(Error::Unreachable { source, .. }) => match source.kind() {
            std::io::ErrorKind::PermissionDenied => format!(
                "cannot log in at {bootstrap}: {source}; check the user and password (`logctl user list` on a trusted listener shows the users)."
            ),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut => format!(
                "cannot reach a broker at {bootstrap} ({source}); is logd running there? Point --bootstrap-server or STRATA_BROKERS at it."
            ),
            _ => format!(
                "cannot connect to a broker at {bootstrap}: {source}; check --security-protocol (and --tls-ca) against the listener's."
            ),
        },
        Some(Error::UnknownTopic(topic)) => {
            format!("topic '{topic}' does not exist; `logctl topic list` shows the topics there are.")
        }
        Some(Error::UnknownPartition { topic, partition }) => format!(
            "topic '{topic}' has no partition {partition}; `logctl topic describe {topic}` shows its partitions."
        ),
        Some(Error::Broker {
            error: ResponseError::UnknownTopicOrPartition,
            operation,
            message: None,
        }) => format!("{operation}: no such topic or partition; `logctl topic list` shows the topics there are."),
        _ => format!("{error:#}"),
    }
}
