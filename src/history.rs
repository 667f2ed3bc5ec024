//! `kpi-stream history`: the KPIs at past instants, from the input topics or from
//! contract-v1 events in a file, one JSON object per line (docs/history.md).
//!
//! A topic's message is taken as received when it was written (its timestamp), the topics
//! merged by that time ([`topics`]); a line of a file as a message written when its event
//! occurred, read in file order. [`kpi_core::history::Replay`] then evaluates every instant
//! exactly as the live service would have published it, having received those messages by
//! then. Bad events are counted by reason and reported at the end, blank lines skipped; a
//! line that is not JSON at all (nor an object cut short) means the file is not JSON lines,
//! and stops the run naming the line.
//!
//! With `billing.rates_topic`, the rates topic is read whole first ([`crate::rates`]), as
//! the live service reads it before joining its group.

mod topics;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tracing::info;

use crate::config::Config;
use crate::metrics::{KpiSamples, Metrics};
use kpi_core::aggregate::Aggregates;
use kpi_core::components::PartitionComponents;
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

/// Where `history` reads its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The configured input topics.
    Topics,
    /// Contract-v1 events, one JSON object per line.
    File(PathBuf),
    Stdin,
}

/// What `history` reads, when it evaluates, and what it writes.
pub struct HistoryArgs {
    pub format: Format,
    pub input: Input,
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

/// What became of the messages read.
#[derive(Debug, Default)]
struct Tally {
    read: u64,
    recorded: u64,
    rejected: BTreeMap<&'static str, u64>,
    /// Events read more than [`OUT_OF_ORDER_MS`] after a later one.
    out_of_order: u64,
}

/// Runs `history` with `config`'s windows, dimensions and calendar.
pub fn run(config: &Config, args: &HistoryArgs) -> anyhow::Result<()> {
    let instants = Instants::new(args.from_ms, args.to_ms, args.step_ms)?;
    let mut settings = config.state_settings()?;
    // The KPIs read no customer signals; only the live service's owners score customers.
    settings.signals.enabled = false;
    // Every rate of the rates topic, known before any event as the live service knows them.
    let (rates, rejected_rates) = crate::rates::read_whole(config)?;
    settings.rates = rates;
    for (reason, count) in &rejected_rates {
        eprintln!("history: rates topic, rejected, {reason}: {count}");
    }
    // A replay at the first instant starts here, as the live service's would.
    let horizon = settings.replay_horizon();
    let since_ms = Family::ALL.map(|family| horizon.since_ms(family, args.from_ms));
    let mut feed = Feed {
        replay: Replay::new(Aggregates::new(settings), instants).with_snapshot(snapshot_on_threads),
        tally: Tally::default(),
        started: Instant::now(),
        last_progress: Instant::now(),
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
    match &args.input {
        Input::Topics => topics::read_beside(config, since_ms, args.to_ms, |message| {
            let received = message.received_ms;
            let family = message.partition.family;
            match event::parse(message.payload, family, received, &limits) {
                Ok(event) => feed.offer(
                    message.partition,
                    message.offset,
                    &event,
                    received,
                    &mut emit,
                ),
                Err(rejection) => feed.reject(rejection.reason),
            }
        })?,
        Input::File(path) => read_lines(open(path)?, &limits, &mut feed, &mut emit)?,
        Input::Stdin => read_lines(std::io::stdin().lock(), &limits, &mut feed, &mut emit)?,
    }
    let Feed {
        replay,
        tally,
        started,
        ..
    } = feed;
    replay.finish(&mut emit);
    written?;
    if args.format == Format::OpenMetrics {
        samples.write(&mut out).context("writing the output")?;
    }
    out.flush().context("writing the output")?;
    info!(
        read = tally.read,
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

/// The replay and what became of the messages offered to it.
struct Feed {
    replay: Replay,
    tally: Tally,
    started: Instant,
    last_progress: Instant,
}

impl Feed {
    /// Offers one message's event, received at `received_ms`.
    fn offer(
        &mut self,
        partition: PartitionId,
        offset: i64,
        event: &event::Event<'_>,
        received_ms: i64,
        emit: &mut impl FnMut(i64, Vec<KpiRecord>),
    ) {
        let behind = self
            .replay
            .clock()
            .is_some_and(|clock| event.occurred_at_ms < clock.saturating_sub(OUT_OF_ORDER_MS));
        if behind {
            self.tally.out_of_order += 1;
        }
        match self
            .replay
            .offer(partition, event, offset, received_ms, emit)
        {
            Ok(_) => self.tally.recorded += 1,
            Err(rejection) => self.count_rejected(rejection.reason),
        }
        self.progress();
    }

    /// A message whose event was rejected before it reached the replay.
    fn reject(&mut self, reason: Reason) {
        self.count_rejected(reason);
        self.progress();
    }

    fn count_rejected(&mut self, reason: Reason) {
        *self.tally.rejected.entry(reason.code()).or_default() += 1;
    }

    /// Counts a message read, and reports progress now and then.
    fn progress(&mut self) {
        self.tally.read += 1;
        // Reading the clock for every event would cost more than the event.
        if self.tally.read % 4096 == 0 && self.last_progress.elapsed() >= PROGRESS_EVERY {
            self.last_progress = Instant::now();
            let rate = self.tally.read as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            let reached = self.replay.clock().map(kpi::rfc3339).unwrap_or_default();
            eprintln!(
                "history: {} events read, at {reached}, {rate:.0} events/s",
                self.tally.read
            );
        }
    }
}

/// Offers each line of `input`, read as a message written when its event occurred.
fn read_lines(
    input: impl Read,
    limits: &event::Limits,
    feed: &mut Feed,
    emit: &mut impl FnMut(i64, Vec<KpiRecord>),
) -> anyhow::Result<()> {
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    let mut number: u64 = 0;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .context("reading the input")?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        let bytes = trim(&line);
        if bytes.is_empty() {
            continue;
        }
        // A bad event is counted; a line that is not JSON at all, nor the start of an
        // object cut short, means the file is something else (CSV, a pretty-printed array).
        if bytes.first() != Some(&b'{')
            && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err()
        {
            bail!("line {number}: not JSON; the input must be JSON lines, one event per line");
        }
        let offset = i64::try_from(number).unwrap_or(i64::MAX);
        match read_event(bytes, limits) {
            Ok((family, mut event)) => {
                // Written when it occurred: that is when it was received, and what lateness
                // is judged against.
                event.reference_ms = event.occurred_at_ms;
                let at = event.occurred_at_ms;
                feed.offer(PartitionId::new(family, 0), offset, &event, at, emit);
            }
            Err(reason) => feed.reject(reason),
        }
    }
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

/// [`Aggregates::snapshot`] with the partitions' components, most of an instant's work,
/// computed on a thread per core: the replay waits for each instant, and the reading thread
/// beside it has little to do meanwhile. The parts keep the partitions' order, so the sums
/// are the sequential ones.
fn snapshot_on_threads(aggregates: &Aggregates, now_ms: i64) -> Vec<KpiRecord> {
    let partitions: Vec<PartitionId> = aggregates.partitions().collect();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = partitions.len().div_ceil(threads).max(1);
    let components = |part: &[PartitionId]| -> Vec<PartitionComponents> {
        part.iter()
            .map(|partition| aggregates.components(*partition, now_ms))
            .collect()
    };
    let mut chunks = partitions.chunks(chunk);
    let first = chunks.next().unwrap_or_default();
    let parts: Vec<PartitionComponents> = std::thread::scope(|scope| {
        let others: Vec<_> = chunks
            .map(|part| scope.spawn(move || components(part)))
            .collect();
        let mut parts = components(first);
        for other in others {
            match other.join() {
                Ok(more) => parts.extend(more),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        parts
    });
    aggregates.records(&parts, now_ms)
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
