//! `costline`: LLM cost attribution from Kafka to ClickHouse.
//!
//! One binary: `run` (a worker), `migrate`, `produce` (realistic load), `demo`, `config`,
//! `prices import` (a community catalog → a price file), `reprice`.
//! This file only parses the command line and wires the pieces; each lives in its module.

mod baseline;
mod budget_api;
mod config;
mod config_reference;
mod dashboard;
mod demo;
mod http;
mod ingest;
mod metrics;
mod otlp;
mod prices;
mod produce;
mod replay;
mod report;
mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use costline_alerts::status::BudgetStatuses;
use costline_alerts::{AlertMetrics, Alerts};
use costline_clickhouse::alert_store::AlertStore;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use config::Config;

/// mimalloc: the worker allocates and frees many small strings across threads (decoder on the
/// consumer task, ledger rows freed by the writer task), where glibc malloc spent ~45 % of the
/// worker's CPU in profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "costline",
    version,
    about = "LLM cost attribution and governance: Kafka usage events → exact rollups in ClickHouse"
)]
struct Cli {
    /// Configuration file (TOML). Every key can also be set as COSTLINE_{SECTION}__{KEY}, e.g. COSTLINE_KAFKA__BROKERS.
    #[arg(long, short, global = true, env = "COSTLINE_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of human-readable text (same as `log.format = "json"`).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate and print the effective configuration (the default).
    Check,
    /// Print the configuration reference (Markdown): every key, its type, default and meaning.
    Reference,
}

#[derive(Subcommand)]
enum Command {
    /// Run a worker: consume usage events, write rollups, until SIGTERM/SIGINT.
    Run,
    /// Apply the pending ClickHouse migration steps (`schemas/clickhouse/NNN_*.sql`).
    Migrate {
        /// Print the SQL instead of applying it.
        #[arg(long)]
        print_sql: bool,
        /// With --print-sql: the SQL for ClickHouse 18.x (views chained by view name).
        #[arg(long, requires = "print_sql")]
        legacy_chaining: bool,
        /// List the applied steps (with when) and the pending ones, and change nothing. Exits 0
        /// whatever is pending; non-zero only when the database cannot be read.
        #[arg(long, conflicts_with = "print_sql")]
        status: bool,
    },
    /// Publish realistic generated usage events to the topic.
    Produce(produce::ProduceArgs),
    /// Start a worker, publish traffic, and print what analysts would see.
    Demo(demo::DemoArgs),
    /// Validate the configuration and print it (secrets redacted): `costline config check`.
    Config {
        #[command(subcommand)]
        action: Option<ConfigAction>,
    },
    /// Backfill usage events from a JSON-lines file (or stdin) into the topic.
    Replay(replay::ReplayArgs),
    /// Analyst shortcuts: aligned tables from ClickHouse, each with the SQL it ran (or CSV or
    /// JSON with `--format`).
    Report(report::ReportArgs),
    /// Benchmark baseline: how fast a bare consumer reads the topic (counts records only).
    BaselineConsume(baseline::ConsumeArgs),
    /// Benchmark baseline: how fast ClickHouse takes the ledger rows a worker run wrote for the
    /// topic (rebuilt from that run's `flushes`, inserted into a fresh database).
    BaselineInsert(baseline::InsertArgs),
    /// Price table tools: `prices import --from litellm FILE`, `prices coverage`.
    #[command(subcommand)]
    Prices(prices::PricesCommand),
    /// Recompute the cost of counted attempts in a period with the current price table and
    /// write the differences as corrections (`--dry-run` to see them first).
    Reprice(prices::reprice::RepriceArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // `run` serves HTTP, and `config check` tells whether `run` would start.
    let serves_http = matches!(cli.command, Command::Run | Command::Config { .. });
    let loaded = Config::load(cli.config.as_deref()).and_then(|config| {
        if serves_http {
            config.validate_http_exposure().map(|()| config)
        } else {
            Ok(config)
        }
    });
    let config = match loaded {
        Ok(mut config) => {
            if cli.log_json {
                config.log.format = config::LogFormat::Json;
            }
            config
        }
        Err(e) => {
            eprintln!("costline: invalid configuration: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("costline: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("costline: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command, config: Config) -> anyhow::Result<std::process::ExitCode> {
    if let Command::Prices(command) = &command {
        return prices::run(&config, command).await;
    }
    run_command(command, config).await.map(|()| std::process::ExitCode::SUCCESS)
}

async fn run_command(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Run => run_worker(config).await,
        Command::Migrate { print_sql: true, legacy_chaining, .. } => {
            use costline_clickhouse::migrate::{statements, ChainStyle};
            let chain = if legacy_chaining { ChainStyle::ViewName } else { ChainStyle::TargetTable };
            for statement in statements(&config.clickhouse.database, chain) {
                println!("-- {}\n{};\n", statement.file, statement.sql);
            }
            Ok(())
        }
        Command::Migrate { status: true, .. } => {
            let status = costline_clickhouse::migrate::status(&worker::clickhouse_target(&config)).await?;
            print!("{status}");
            Ok(())
        }
        Command::Migrate { .. } => {
            let applied = costline_clickhouse::migrate::apply(&worker::clickhouse_target(&config)).await?;
            let database = &config.clickhouse.database;
            if applied.is_empty() {
                println!("database `{database}` is up to date: nothing applied");
            }
            for step in applied {
                println!("applied migration step {} to database `{database}`", step.file);
            }
            Ok(())
        }
        Command::Produce(args) => produce::run(&config, &args).await,
        Command::Demo(args) => demo::run(config, &args).await,
        Command::BaselineConsume(args) => baseline::consume(&config, &args).await,
        Command::BaselineInsert(args) => baseline::insert(&config, &args).await,
        Command::Report(args) => report::run(&config, &args).await,
        Command::Replay(args) => replay::run(&config, &args).await,
        Command::Reprice(args) => prices::reprice::run(&config, &args).await,
        Command::Prices(command) => prices::run(&config, &command).await.map(|_| ()),
        Command::Config { action: Some(ConfigAction::Reference) } => {
            print!("{}", config_reference::markdown());
            Ok(())
        }
        Command::Config { action: None | Some(ConfigAction::Check) } => {
            print!("{}", toml::to_string_pretty(&config).context("rendering the configuration")?);
            println!(
                "# clickhouse password: {}",
                if config.clickhouse.password.is_some() { "set (***)" } else { "not set" }
            );
            println!("# http token: {}", if config.http.token.is_some() { "set (***)" } else { "not set" });
            Ok(())
        }
    }
}

async fn run_worker(config: Config) -> anyhow::Result<()> {
    let prices = prices::table::load(&config.pricing)?;
    let metrics = Arc::new(metrics::Metrics::new().context("registering metrics")?);
    let telemetry = Arc::new(http::Telemetry { metrics, ready: AtomicBool::new(false) });
    let shutdown = CancellationToken::new();
    let target = worker::clickhouse_target(&config);
    let (alerts, budget_statuses) = alerts(&config, &target, &telemetry.metrics)?;
    let extra = config.kafka.producer_properties();
    let ingest_producer = costline_kafka::RecordProducer::connect(&config.kafka.brokers, &extra)
        .context("creating the ingest producer")?;
    let traces = otlp::router(
        ingest_producer.clone(),
        config.kafka.topic.clone(),
        &config.http,
        config.otlp.clone(),
        telemetry.metrics.clone(),
    );
    let ingest = ingest::router(
        ingest_producer,
        config.kafka.topic.clone(),
        config.http.max_body_bytes,
        config.http.max_batch_events,
    );
    let dashboard_data = dashboard::router(costline_clickhouse::dashboard_store::DashboardStore::new(&target));
    let routes = http::Routes {
        open: dashboard::page(),
        protected: budget_api::router(budget_statuses).merge(ingest).merge(traces).merge(dashboard_data),
    };
    // Every background task ends at shutdown and is awaited before the worker returns.
    let tasks = TaskTracker::new();
    let http_config = config.http.clone();
    tasks.spawn({
        let (telemetry, shutdown) = (telemetry.clone(), shutdown.clone());
        async move {
            if let Err(e) = http::serve(&http_config, telemetry, routes, shutdown).await {
                tracing::error!(error = format!("{e:#}"), "the HTTP server stopped");
            }
        }
    });
    // The worker's rebalance callbacks publish whether it leads; the alerts follow.
    let (leads, leadership) = watch::channel(false);
    // Deliveries in flight stop at shutdown and stay pending in the outbox.
    tasks.spawn(alerts.run(leadership, shutdown.clone()));
    tasks.spawn(cancel_on_signal(shutdown.clone()));
    tasks.close();
    info!(
        models = prices.model_count(),
        budgets = config.budgets.len(),
        http = %config.http.listen,
        http_token = config.http.token.is_some(),
        "costline worker starting"
    );
    let result = worker::run(&config, prices, telemetry, leads, shutdown.clone()).await;
    shutdown.cancel();
    tasks.wait().await;
    result
}

/// The alerts of a worker, and the budget statuses they share with the budget API.
fn alerts(
    config: &Config,
    target: &costline_clickhouse::ClickHouseTarget,
    metrics: &metrics::Metrics,
) -> anyhow::Result<(Alerts, Arc<BudgetStatuses>)> {
    let store = AlertStore::new(target);
    let budgets = (0..config.budgets.len()).map(|i| config.budget(i)).collect::<anyhow::Result<Vec<_>>>()?;
    let statuses = Arc::new(BudgetStatuses::new(store.clone(), config.kafka.topic.clone(), budgets));
    let webhooks = config
        .webhooks
        .iter()
        .map(|hook| Ok((hook.id.clone(), hook.sender()?)))
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    let alert_metrics = AlertMetrics {
        fired: metrics.alerts_fired.clone(),
        deliveries: metrics.alert_deliveries.clone(),
        evaluations: metrics.alert_evaluations.clone(),
    };
    let alerts = Alerts::new(store, statuses.clone(), webhooks, config.alerts.settings(), alert_metrics);
    Ok((alerts, statuses))
}

/// Cancels `token` on SIGTERM or SIGINT; ends when `token` is cancelled otherwise.
async fn cancel_on_signal(token: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = token.cancelled() => return,
        _ = term.recv() => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
    }
    token.cancel();
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if config.log.format == config::LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}
