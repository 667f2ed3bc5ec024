//! `kpi-stream run`: wires the HTTP server and the consume loop together and shuts both
//! down on one token.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::clock::Clock;
use crate::config::Config;
use crate::customer_health::{HealthView, own_customers};
use crate::exchange::read_components;
use crate::http::ServedState;
use crate::metrics::Metrics;
use crate::periods::{PeriodStore, read_periods};
use crate::pipeline::Pipeline;
use crate::rates::follow_rates;
use kpi_core::components::ReceivedComponents;
use kpi_core::event::Family;

/// How long a shutdown waits for the components reader to stop.
const READER_GRACE: Duration = Duration::from_secs(1);

/// Runs until `shutdown` is cancelled (or, with `exit_when_caught_up`, until caught up).
pub async fn run(
    config: Config,
    clock: Clock,
    shutdown: CancellationToken,
    exit_when_caught_up: bool,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let metrics = Arc::new(
        Metrics::new(
            &config.dimensions.names,
            Family::ALL.map(|f| config.topic(f)),
            &config.billing.base_currency,
        )
        .context("registering metrics")?,
    );
    let customers = Arc::new(HealthView::new(&config, config.health.model()?));
    let status = Arc::new(ServedState::new(customers.clone()));
    let server = crate::http::Server::bind(&config.http, metrics.clone(), status.clone())?;
    let http_stop = CancellationToken::new();
    let http = tokio::spawn(server.serve(http_stop.clone()));

    let received = Arc::new(Mutex::new(ReceivedComponents::default()));
    let reader_stop = CancellationToken::new();
    let reader = {
        let (config, received, metrics, stop) = (
            config.clone(),
            received.clone(),
            metrics.clone(),
            reader_stop.clone(),
        );
        std::thread::Builder::new()
            .name("components".into())
            .spawn(move || read_components(config, received, metrics, stop))
            .context("starting the components reader")?
    };
    let periods = Arc::new(PeriodStore::default());
    let periods_reader = {
        let (config, periods, metrics, stop) = (
            config.clone(),
            periods.clone(),
            metrics.clone(),
            reader_stop.clone(),
        );
        std::thread::Builder::new()
            .name("periods".into())
            .spawn(move || read_periods(config, periods, metrics, stop))
            .context("starting the periods reader")?
    };
    let (rates_sender, rates) = crate::rates::channel(&config);
    let pipeline = Pipeline::new(
        config.clone(),
        metrics.clone(),
        status,
        received,
        periods,
        rates,
        clock.clone(),
    )?;
    let mut readers = vec![("components", reader), ("periods", periods_reader)];
    if config.health.enabled {
        let (config, metrics, clock, stop, runtime) = (
            config.clone(),
            metrics.clone(),
            clock.clone(),
            reader_stop.clone(),
            tokio::runtime::Handle::current(),
        );
        let owner = std::thread::Builder::new()
            .name("customer-health".into())
            .spawn(move || own_customers(config, metrics, customers, clock, runtime, stop))
            .context("starting the customer health owner")?;
        readers.push(("customer health", owner));
    }
    if config.billing.rates_topic.is_some() {
        let (dead_letters, stop, runtime) = (
            pipeline.dead_letters(),
            reader_stop.clone(),
            tokio::runtime::Handle::current(),
        );
        let rates_reader = std::thread::Builder::new()
            .name("rates".into())
            .spawn(move || follow_rates(config, rates_sender, metrics, dead_letters, runtime, stop))
            .context("starting the rates reader")?;
        readers.push(("rates", rates_reader));
    }
    let result = pipeline.run(shutdown, exit_when_caught_up).await;
    // HTTP and the components reader stay up until the final snapshot is published.
    reader_stop.cancel();
    http_stop.cancel();
    http.await.context("http task")?;
    // The reader stops within one poll, unless a metadata call is waiting for an absent
    // broker: then the process exits without it rather than outlast its grace period.
    let deadline = tokio::time::Instant::now() + READER_GRACE;
    while readers.iter().any(|(_, r)| !r.is_finished()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (name, reader) in readers {
        if reader.is_finished() {
            match reader.join() {
                Ok(read) => read?,
                Err(_) => anyhow::bail!("the {name} reader panicked"),
            }
        } else {
            warn!(
                reader = name,
                "reader still waiting for the broker; exiting without it"
            );
        }
    }
    result
}
