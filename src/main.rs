//! The `kpi-stream` command: `run`, `check-config`, `generate`, `history`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kpi_stream::clock::wall_clock;
use kpi_stream::config::{ClientKind, Config, ConfigError};
use kpi_stream::generate;
use kpi_stream::http::check_tls_files;
use kpi_stream::kafka::{check_clients, generator_producer_config};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

#[derive(Parser)]
#[command(version, about = "Live customer-success KPIs from Kafka events")]
struct Cli {
    /// Configuration file; every key can also be set by a KPI_STREAM_<SECTION>__<KEY> variable.
    #[arg(long, short, global = true, env = "KPI_STREAM_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the input topics and serve the KPIs.
    Run {
        /// Exit 0 once every assigned partition has caught up (for benchmarks).
        #[arg(long)]
        exit_when_caught_up: bool,
    },
    /// Load and validate the configuration, print it, and exit.
    CheckConfig,
    /// Produce synthetic events to the input topics.
    Generate {
        #[arg(long)]
        rate: Option<u32>,
        #[arg(long)]
        count: Option<u64>,
        /// Events of a history (spread over --span) produced first, as fast as possible.
        #[arg(long)]
        history: Option<u64>,
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long)]
        malformed_ratio: Option<f64>,
        /// Spread occurred_at over this much history before now (e.g. 30d), oldest first: the
        /// --history events, or without them the --count ones.
        #[arg(long, value_parser = humantime::parse_duration)]
        span: Option<std::time::Duration>,
    },
    /// Evaluate every KPI at past instants, from contract-v1 events in a JSON-lines file,
    /// exactly as the live service would have published them (docs/history.md).
    History {
        /// Events, one JSON object per line, in the order they were written; `-`: standard
        /// input. Without it, the configured input topics.
        #[arg(long)]
        input: Option<PathBuf>,
        /// The first instant: RFC 3339, or a duration before now (`30d`).
        #[arg(long, default_value = "30d")]
        from: String,
        /// The last instant: RFC 3339, or a duration before now; now when not given.
        #[arg(long)]
        to: Option<String>,
        /// Between two instants.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        step: std::time::Duration,
        /// `openmetrics`: /metrics' gauges with timestamps, for `promtool tsdb
        /// create-blocks-from openmetrics`; `jsonl`: the output topic's objects, one per line.
        #[arg(long, value_enum, default_value_t = HistoryFormat::Openmetrics)]
        format: HistoryFormat,
        /// Where to write; standard output when not given.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

/// What `history` writes.
#[derive(Clone, Copy, clap::ValueEnum)]
enum HistoryFormat {
    /// /metrics' KPI gauges, each sample with its instant, ending with `# EOF`.
    Openmetrics,
    /// The output topic's JSON objects, one per line, `window_end` the instant.
    Jsonl,
}

/// Exit code of an unusable configuration.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    let config = match configure(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kpi-stream: invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Command::History {
        input,
        from,
        to,
        step,
        format,
        output,
    } = &cli.command
    {
        let format = match format {
            HistoryFormat::Openmetrics => kpi_stream::history::Format::OpenMetrics,
            HistoryFormat::Jsonl => kpi_stream::history::Format::Jsonl,
        };
        return match history_args(input, from, to.as_deref(), *step, format, output) {
            Ok(args) => match kpi_stream::history::run(&config, &args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("kpi-stream history: {e:#}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("kpi-stream history: {e:#}");
                ExitCode::from(EXIT_CONFIG)
            }
        };
    }
    if let Command::CheckConfig = cli.command {
        // Secrets are `Secret` values: they print as `<redacted>`. A closed pipe (`| head`)
        // is the reader's choice, not an error.
        let _ = writeln!(std::io::stdout(), "{config:#?}");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "could not start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        match cli.command {
            Command::Run {
                exit_when_caught_up,
            } => kpi_stream::app::run(config, wall_clock(), shutdown, exit_when_caught_up).await,
            Command::Generate { .. } => generate::run(config, wall_clock(), shutdown).await,
            Command::CheckConfig | Command::History { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = format!("{e:#}"), "exiting");
            ExitCode::FAILURE
        }
    }
}

/// The arguments of `history`, its times read against the wall clock.
fn history_args(
    input: &Option<PathBuf>,
    from: &str,
    to: Option<&str>,
    step: std::time::Duration,
    format: kpi_stream::history::Format,
    output: &Option<PathBuf>,
) -> anyhow::Result<kpi_stream::history::HistoryArgs> {
    let now = wall_clock()();
    let from_ms = kpi_stream::history::parse_instant(from, now)?;
    let to_ms = match to {
        Some(to) => kpi_stream::history::parse_instant(to, now)?,
        None => now,
    };
    Ok(kpi_stream::history::HistoryArgs {
        format,
        input: match input {
            None => kpi_stream::history::Input::Topics,
            Some(path) if path.as_os_str() == "-" => kpi_stream::history::Input::Stdin,
            Some(path) => kpi_stream::history::Input::File(path.clone()),
        },
        from_ms,
        to_ms,
        step_ms: i64::try_from(step.as_millis())?,
        output: output.clone(),
    })
}

/// Loads the configuration, applies the command line's overrides, and checks the librdkafka
/// clients the command creates, so that a configuration the command cannot run with
/// stops it here, naming the key.
fn configure(cli: &Cli) -> Result<Config, ConfigError> {
    let mut config = Config::load(cli.config.as_deref())?;
    match &cli.command {
        Command::Generate {
            rate,
            count,
            history,
            seed,
            malformed_ratio,
            span,
        } => {
            let g = &mut config.generate;
            g.rate = rate.unwrap_or(g.rate);
            g.count = count.unwrap_or(g.count);
            g.history = history.unwrap_or(g.history);
            g.seed = seed.unwrap_or(g.seed);
            g.malformed_ratio = malformed_ratio.unwrap_or(g.malformed_ratio);
            g.span = span.unwrap_or(g.span);
            config.validate()?;
            config.check_client(ClientKind::Producer, &generator_producer_config(&config))?;
        }
        Command::Run { .. } | Command::CheckConfig => {
            check_clients(&config)?;
            check_tls_files(&config.http)?;
        }
        // Reads a file and writes one: no Kafka client, no listener.
        Command::History { .. } => {}
    }
    Ok(config)
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: log files and collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    info!("shutdown requested");
    shutdown.cancel();
}
