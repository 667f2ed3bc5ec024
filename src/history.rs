//! `kpi-stream history`: the KPIs at past instants, from contract-v1 events in a file, one
//! JSON object per line (docs/history.md).
//!
//! Each line is taken as a message written when its event occurred, read in file order, so
//! [`kpi_core::history::Replay`] evaluates every instant exactly as the live service would
//! have published it, having received the lines before it by then. Bad events are counted
//! by reason and reported at the end, blank lines skipped; a line that is not JSON at all
//! (nor an object cut short) means the file is not JSON lines, and stops the run naming the
//! line.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tracing::info;

use crate::config::Config;
use crate::metrics::{KpiSamples, Metrics};
use kpi_core::aggregate::Aggregates;
use kpi_core::event::{self, Family, Reason};
use kpi_core::history::{Instants, Replay};
use kpi_core::kpi::{self, KpiRecord};
use kpi_core::partition::PartitionId;

/// How often a long run reports its progress on standard error.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// An event that occurred this long before the latest one read is out of order: an instant
/// the run's clock had passed was evaluated without it. A producer writes its events about
/// when they happen; a dump of several partitions one after the other does not.
const OUT_OF_ORDER_MS: i64 = 3_600_000;

/// What `history` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// /metrics' names, labels and help, each sample with its instant, ending with `# EOF`:
    /// what `promtool tsdb create-blocks-from openmetrics` reads.
    OpenMetrics,
    /// The output topic's objects, one per line.
    Jsonl,
}

/// What `history` reads, when it evaluates, and what it writes.
pub struct HistoryArgs {
    pub format: Format,
    /// `None`: standard input.
    pub input: Option<PathBuf>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub step_ms: i64,
    /// `None`: standard output.
    pub output: Option<PathBuf>,
}

/// A time on the command line: RFC 3339, or a duration before `now_ms` (`30d`, `12h`).
pub fn parse_instant(text: &str, now_ms: i64) -> anyhow::Result<i64> {
    if let Ok(ms) = event::parse_timestamp(text, "time") {
        return Ok(ms);
    }
    let ago = humantime::parse_duration(text)
        .with_context(|| format!("{text:?} is neither RFC 3339 nor a duration such as 30d"))?;
    let ago = i64::try_from(ago.as_millis()).context("duration too large")?;
    Ok(now_ms.saturating_sub(ago))
}

/// What became of the lines read.
#[derive(Debug, Default)]
struct Tally {
    lines: u64,
    recorded: u64,
    rejected: BTreeMap<&'static str, u64>,
    /// Events read more than [`OUT_OF_ORDER_MS`] after a later one.
    out_of_order: u64,
}

/// Runs `history` with `config`'s windows, dimensions and calendar.
pub fn run(config: &Config, args: &HistoryArgs) -> anyhow::Result<()> {
    let instants = Instants::new(args.from_ms, args.to_ms, args.step_ms)?;
    let aggregates = Aggregates::new(config.state_settings()?);
    let mut replay = Replay::new(aggregates, instants);
    let input: Box<dyn Read> = match &args.input {
        Some(path) => Box::new(open(path)?),
        None => Box::new(std::io::stdin().lock()),
    };
    let output: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::new(output);
    let currency = config.billing.base_currency.clone();
    let topics = Family::ALL.map(|f| config.topic(f));
    let metrics = Metrics::new(&config.dimensions.names, topics, &currency)?;
    let mut samples = OpenMetrics::default();
    let mut written: anyhow::Result<()> = Ok(());
    let mut emit = |instant: i64, records: Vec<KpiRecord>| match args.format {
        Format::Jsonl => {
            if written.is_ok() {
                written = write_jsonl(&mut out, instant, &records, &currency);
            }
        }
        Format::OpenMetrics => {
            metrics.update_kpis(&records);
            samples.add(instant, metrics.kpi_samples());
        }
    };
    let limits = config.limits();
    let mut tally = Tally::default();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut line = Vec::new();
    let mut reader = BufReader::new(input);
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .context("reading the input")?;
        if read == 0 {
            break;
        }
        tally.lines += 1;
        let bytes = trim(&line);
        if bytes.is_empty() {
            continue;
        }
        // A bad event is counted; a line that is not JSON at all, nor the start of an
        // object cut short, means the file is something else (CSV, a pretty-printed array).
        if bytes.first() != Some(&b'{')
            && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err()
        {
            bail!(
                "line {}: not JSON; the input must be JSON lines, one event per line",
                tally.lines
            );
        }
        match read_event(bytes, &limits) {
            Ok((family, mut event)) => {
                // Written when it occurred: that is when it was received, and what lateness
                // is judged against.
                event.reference_ms = event.occurred_at_ms;
                let at = event.occurred_at_ms;
                if replay
                    .clock()
                    .is_some_and(|clock| at < clock.saturating_sub(OUT_OF_ORDER_MS))
                {
                    tally.out_of_order += 1;
                }
                let partition = PartitionId::new(family, 0);
                let offset = i64::try_from(tally.lines).unwrap_or(i64::MAX);
                match replay.offer(partition, &event, offset, at, &mut emit) {
                    Ok(_) => tally.recorded += 1,
                    Err(rejection) => {
                        *tally.rejected.entry(rejection.reason.code()).or_default() += 1
                    }
                }
            }
            Err(reason) => *tally.rejected.entry(reason.code()).or_default() += 1,
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            let rate = tally.lines as f64 / started.elapsed().as_secs_f64().max(1e-9);
            let reached = replay.clock().map(kpi::rfc3339).unwrap_or_default();
            eprintln!(
                "history: {} lines read, at {reached}, {rate:.0} lines/s",
                tally.lines
            );
        }
    }
    replay.finish(&mut emit);
    written?;
    if args.format == Format::OpenMetrics {
        samples.write(&mut out).context("writing the output")?;
    }
    out.flush().context("writing the output")?;
    info!(
        lines = tally.lines,
        recorded = tally.recorded,
        seconds = started.elapsed().as_secs_f64(),
        "history written"
    );
    for (reason, count) in &tally.rejected {
        eprintln!("history: rejected, {reason}: {count}");
    }
    if tally.out_of_order > 0 {
        eprintln!(
            "history: warning: {} events occurred more than an hour before an event read earlier; \
             the instants passed meanwhile were evaluated without them. Give the events in the \
             order they were written (merge the partitions of a dump by occurred_at)",
            tally.out_of_order
        );
    }
    Ok(())
}

fn open(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))
}

fn trim(line: &[u8]) -> &[u8] {
    let start = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    line.get(start..end).unwrap_or_default()
}

/// The event of a line and its family, found by its type; the reason it is rejected
/// otherwise.
fn read_event<'a>(
    bytes: &'a [u8],
    limits: &event::Limits,
) -> Result<(Family, event::Event<'a>), Reason> {
    // No message timestamp: the skew check cannot refuse an event of the past.
    let reference = i64::MAX / 2;
    let mut first = None;
    for family in Family::ALL {
        match event::parse(bytes, family, reference, limits) {
            Ok(event) => return Ok((family, event)),
            Err(rejection) if rejection.reason == Reason::WrongTopic => {}
            Err(rejection) => {
                first.get_or_insert(rejection.reason);
                break;
            }
        }
    }
    Err(first.unwrap_or(Reason::WrongTopic))
}

/// The instant's records as the output topic's objects, one per line.
fn write_jsonl(
    out: &mut impl Write,
    instant: i64,
    records: &[KpiRecord],
    currency: &str,
) -> anyhow::Result<()> {
    for record in records {
        serde_json::to_writer(&mut *out, &record.to_json(instant, currency))
            .context("writing the output")?;
        out.write_all(b"\n").context("writing the output")?;
    }
    Ok(())
}

/// The samples of every instant, grouped as OpenMetrics requires: all of a metric's samples
/// together, each series' in time order. Held until the end, which is what the output
/// costs in memory.
#[derive(Default)]
struct OpenMetrics {
    families: BTreeMap<String, OpenMetricsFamily>,
}

#[derive(Default)]
struct OpenMetricsFamily {
    help: String,
    /// Rendered labels to (instant, value).
    series: BTreeMap<String, Vec<(i64, f64)>>,
}

impl OpenMetrics {
    fn add(&mut self, instant: i64, samples: Vec<KpiSamples>) {
        for metric in samples {
            let family = self.families.entry(metric.name).or_default();
            family.help = metric.help;
            for (mut labels, value) in metric.series {
                labels.sort();
                family
                    .series
                    .entry(render_labels(&labels))
                    .or_default()
                    .push((instant, value));
            }
        }
    }

    fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        for (name, family) in &self.families {
            writeln!(out, "# HELP {name} {}", escape(&family.help, false))?;
            writeln!(out, "# TYPE {name} gauge")?;
            for (labels, samples) in &family.series {
                for (instant, value) in samples {
                    let seconds = instant.div_euclid(1000);
                    let millis = instant.rem_euclid(1000);
                    writeln!(out, "{name}{labels} {value} {seconds}.{millis:03}")?;
                }
            }
        }
        writeln!(out, "# EOF")
    }
}

/// `{a="x",b="y"}`, values escaped as the exposition formats require.
fn render_labels(labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(name, value)| format!("{name}=\"{}\"", escape(value, true)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A backslash and a line feed escaped, and in a label value a double quote too.
fn escape(text: &str, quote: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}
