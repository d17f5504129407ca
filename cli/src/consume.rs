//! `logctl consume`: print records from an offset, a time, or the end; or,
//! with `-g`, as a member of a consumer group from its committed offsets
//! (committing what it printed).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use strata_client::{Consumer, ConsumerRecord, Isolation, Offset, OffsetReset};

use crate::connect::Connect;
use crate::output::Format;

#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// The topic to read.
    topic: String,
    /// Consume as a member of this consumer group: its partitions are
    /// shared with the group's other members, reading starts at the group's
    /// committed offsets, and what is printed is committed. Ctrl-C leaves
    /// the group at once.
    #[arg(short, long)]
    group: Option<String>,
    /// Read only this partition (default: all).
    #[arg(short, long)]
    partition: Option<i32>,
    /// Where to start in each partition: start, end, an offset N, -N for
    /// the last N records, or @UNIX_MS for a time. With -g: where
    /// partitions without a committed offset start (start or end).
    #[arg(short, long, default_value = "start", value_parser = parse_offset, allow_hyphen_values = true)]
    offset: Offset,
    /// Stop after COUNT records.
    #[arg(short = 'n', long)]
    count: Option<u64>,
    /// Stop when no record arrived for this long (default: wait forever).
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Print each record as FORMAT (as kcat's -f): %t topic, %p partition,
    /// %o offset, %k key, %v value, %h headers (k=v,...), %T timestamp
    /// (ms), %K / %S key / value length (-1 for null), \n \t \\ %%.
    /// Default: the value and a newline. Ignored with --format json.
    #[arg(short = 'f', long = "print", value_name = "FORMAT")]
    print: Option<String>,
    /// read_committed: only records of committed transactions (and outside
    /// transactions), up to the last stable offset; read_uncommitted:
    /// everything below the high watermark.
    #[arg(long, default_value = "read_uncommitted")]
    isolation: Isolation,
}

fn parse_offset(text: &str) -> Result<Offset, String> {
    match text {
        "start" | "beginning" => Ok(Offset::Beginning),
        "end" => Ok(Offset::End),
        _ => {
            if let Some(timestamp) = text.strip_prefix('@') {
                return timestamp
                    .parse()
                    .map(Offset::Timestamp)
                    .map_err(|_| format!("'{text}' is not @UNIX_MS"));
            }
            if let Some(count) = text.strip_prefix('-') {
                return count
                    .parse()
                    .map(Offset::FromEnd)
                    .map_err(|_| format!("'{text}' is not -N (the last N records)"));
            }
            match text.parse::<i64>() {
                Ok(offset) => Ok(Offset::At(offset)),
                _ => Err(format!(
                    "'{text}' is not start, end, an offset, -N or @UNIX_MS"
                )),
            }
        }
    }
}

pub async fn run(connect: &Connect, format: Format, args: ConsumeArgs) -> anyhow::Result<()> {
    let template = match (&args.print, format) {
        (Some(text), Format::Table) => parse_template(text)?,
        _ => vec![Piece::Value, Piece::Text(b"\n".to_vec())],
    };
    let mut consumer = match &args.group {
        Some(group) => group_consumer(connect, group, &args).await?,
        None => {
            let mut consumer = connect.consumer().isolation(args.isolation).build().await?;
            match args.partition {
                Some(partition) => consumer.assign(&[(&args.topic, partition)]).await?,
                None => consumer.assign_topic(&args.topic).await?,
            }
            for (topic, partition) in consumer.assignment() {
                consumer.seek(&topic, partition, args.offset)?;
            }
            consumer
        }
    };
    if args.count == Some(0) {
        return Ok(());
    }
    let printed = print_records(&mut consumer, format, &template, &args).await;
    if args.group.is_some() {
        // Leaves, so the group rebalances now rather than after a session.
        consumer.close().await?;
    }
    let Ended {
        printed,
        interrupted,
    } = printed?;
    if let Some(count) = args.count {
        if printed < count && !interrupted {
            bail!(
                "only {printed} of {count} records arrived within {} ms",
                args.timeout_ms.unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// A member of `group` subscribed to the topic.
async fn group_consumer(
    connect: &Connect,
    group: &str,
    args: &ConsumeArgs,
) -> anyhow::Result<Consumer> {
    if args.partition.is_some() {
        bail!("-p and -g do not mix: a group assigns its members' partitions");
    }
    let reset = match args.offset {
        Offset::Beginning => OffsetReset::Earliest,
        Offset::End => OffsetReset::Latest,
        _ => bail!(
            "with -g, -o is start or end (where partitions without a committed offset begin); move a group's offsets with `logctl group reset-offsets`"
        ),
    };
    let topics = connect.admin().await?.list_topics().await?;
    if !topics.iter().any(|topic| topic.name == args.topic) {
        return Err(strata_client::Error::UnknownTopic(args.topic.clone()).into());
    }
    // Commits name exactly what was printed (see `print_records`), not
    // what was fetched.
    let mut consumer = connect
        .consumer()
        .group_id(group)
        .offset_reset(reset)
        .isolation(args.isolation)
        .auto_commit(None)
        .build()
        .await?;
    consumer.subscribe(&[&args.topic])?;
    Ok(consumer)
}

/// How printing ended: how many records, and whether Ctrl-C ended it.
struct Ended {
    printed: u64,
    interrupted: bool,
}

/// Prints records until the count, the idle timeout or Ctrl-C. In a group,
/// commits after each poll the offsets after the records printed.
async fn print_records(
    consumer: &mut Consumer,
    format: Format,
    template: &[Piece],
    args: &ConsumeArgs,
) -> anyhow::Result<Ended> {
    let idle_max = args.timeout_ms.map(Duration::from_millis);
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let ended = |printed, interrupted| {
        Ok(Ended {
            printed,
            interrupted,
        })
    };
    loop {
        let wait = idle_max.map_or(Duration::from_secs(1), |idle| {
            idle.saturating_sub(last_record.elapsed())
                .max(Duration::from_millis(1))
        });
        let records = tokio::select! {
            records = consumer.poll(wait) => records?,
            _ = &mut interrupt => {
                std::io::Write::flush(&mut out)?;
                return ended(printed, true);
            }
        };
        if records.is_empty() {
            if idle_max.is_some_and(|idle| last_record.elapsed() >= idle) {
                break;
            }
            std::io::Write::flush(&mut out)?;
            continue;
        }
        last_record = Instant::now();
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut done = false;
        for record in records {
            print_record(&mut out, format, template, &record)?;
            next.insert(
                (record.topic.to_string(), record.partition),
                record.offset + 1,
            );
            printed += 1;
            if args.count.is_some_and(|count| printed >= count) {
                done = true;
                break;
            }
        }
        std::io::Write::flush(&mut out)?;
        if args.group.is_some() {
            let offsets: Vec<(&str, i32, i64)> = next
                .iter()
                .map(|((topic, partition), offset)| (topic.as_str(), *partition, *offset))
                .collect();
            consumer.commit_offsets(&offsets).await?;
        }
        if done {
            return ended(printed, false);
        }
    }
    std::io::Write::flush(&mut out)?;
    ended(printed, false)
}

/// One part of a `--print` template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Headers,
    Timestamp,
    KeyLength,
    ValueLength,
}

fn parse_template(text: &str) -> anyhow::Result<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut literal = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        let piece = match c {
            '%' => match chars.next() {
                Some('t') => Piece::Topic,
                Some('p') => Piece::Partition,
                Some('o') => Piece::Offset,
                Some('k') => Piece::Key,
                Some('v') | Some('s') => Piece::Value,
                Some('h') => Piece::Headers,
                Some('T') => Piece::Timestamp,
                Some('K') => Piece::KeyLength,
                Some('S') => Piece::ValueLength,
                Some('%') => {
                    literal.push(b'%');
                    continue;
                }
                other => bail!(
                    "--print: unknown field %{}; use %t %p %o %k %v %h %T %K %S or %%",
                    other.map(String::from).unwrap_or_default()
                ),
            },
            '\\' => {
                match chars.next() {
                    Some('n') => literal.push(b'\n'),
                    Some('t') => literal.push(b'\t'),
                    Some('r') => literal.push(b'\r'),
                    Some('0') => literal.push(0),
                    Some('\\') => literal.push(b'\\'),
                    Some(other) => {
                        literal.push(b'\\');
                        let mut buffer = [0; 4];
                        literal.extend_from_slice(other.encode_utf8(&mut buffer).as_bytes());
                    }
                    None => literal.push(b'\\'),
                }
                continue;
            }
            other => {
                let mut buffer = [0; 4];
                literal.extend_from_slice(other.encode_utf8(&mut buffer).as_bytes());
                continue;
            }
        };
        if !literal.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut literal)));
        }
        pieces.push(piece);
    }
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(pieces)
}

fn print_record(
    out: &mut impl std::io::Write,
    format: Format,
    template: &[Piece],
    record: &ConsumerRecord,
) -> std::io::Result<()> {
    let text = |bytes: &Option<bytes::Bytes>| {
        bytes
            .as_ref()
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
    };
    let length =
        |bytes: &Option<bytes::Bytes>| bytes.as_ref().map_or(-1, |bytes| bytes.len() as i64);
    match format {
        Format::Table => {
            for piece in template {
                match piece {
                    Piece::Text(text) => out.write_all(text)?,
                    Piece::Topic => out.write_all(record.topic.as_bytes())?,
                    Piece::Partition => write!(out, "{}", record.partition)?,
                    Piece::Offset => write!(out, "{}", record.offset)?,
                    Piece::Key => out.write_all(record.key.as_deref().unwrap_or_default())?,
                    Piece::Value => out.write_all(record.value.as_deref().unwrap_or_default())?,
                    Piece::Timestamp => write!(out, "{}", record.timestamp_ms)?,
                    Piece::KeyLength => write!(out, "{}", length(&record.key))?,
                    Piece::ValueLength => write!(out, "{}", length(&record.value))?,
                    Piece::Headers => {
                        for (index, (key, value)) in record.headers.iter().enumerate() {
                            if index > 0 {
                                out.write_all(b",")?;
                            }
                            out.write_all(key.as_bytes())?;
                            out.write_all(b"=")?;
                            out.write_all(value.as_deref().unwrap_or_default())?;
                        }
                    }
                }
            }
            Ok(())
        }
        Format::Json => writeln!(
            out,
            "{}",
            json!({
                "topic": &*record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "timestamp": record.timestamp_ms,
                "key": text(&record.key),
                "value": text(&record.value),
                "headers": record.headers.iter().map(|(key, value)| json!({"key": key, "value": text(value)})).collect::<Vec<_>>(),
            })
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_fields_escapes_and_text() {
        assert_eq!(
            parse_template("%t/%p@%o %k=%v\\t%h %T%%\\n").unwrap(),
            vec![
                Piece::Topic,
                Piece::Text(b"/".to_vec()),
                Piece::Partition,
                Piece::Text(b"@".to_vec()),
                Piece::Offset,
                Piece::Text(b" ".to_vec()),
                Piece::Key,
                Piece::Text(b"=".to_vec()),
                Piece::Value,
                Piece::Text(b"\t".to_vec()),
                Piece::Headers,
                Piece::Text(b" ".to_vec()),
                Piece::Timestamp,
                Piece::Text(b"%\n".to_vec()),
            ]
        );
        let error = parse_template("%q").unwrap_err().to_string();
        assert!(error.contains("unknown field %q"), "{error}");
    }

    #[test]
    fn offsets_parse_every_form() {
        assert_eq!(parse_offset("start"), Ok(Offset::Beginning));
        assert_eq!(parse_offset("end"), Ok(Offset::End));
        assert_eq!(parse_offset("42"), Ok(Offset::At(42)));
        assert_eq!(parse_offset("-10"), Ok(Offset::FromEnd(10)));
        assert_eq!(
            parse_offset("@1700000000000"),
            Ok(Offset::Timestamp(1_700_000_000_000))
        );
        assert!(parse_offset("yesterday").is_err());
        assert!(parse_offset("-x").is_err());
    }
}
