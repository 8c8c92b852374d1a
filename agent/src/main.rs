//! The `cgscope` command line: parse, wire, run.

use std::{
    process::ExitCode,
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use cgscope::{
    check,
    config::{
        CheckConfig, CheckFormat, PlaybookRunConfig, ReportFormat, RunConfig, SnapshotConfig,
        SnapshotFormat, TopConfig, DEFAULT_INTERVAL,
    },
    export::{
        api::{self, Published},
        delivery::{self, Queue, QueueLimits},
        prometheus::Exposition,
        resource::AgentResource,
        settings::OtlpSettings,
        transport::Transport,
        Exporter,
    },
    playbook,
    sampler::{Sampler, SamplerConfig},
    snapshot::Snapshot,
    table, text, top,
};
use clap::{Parser, Subcommand};

/// Per-container kernel performance agent: run-queue latency and cgroup v2 stats
/// for every cgroup on the node.
#[derive(Parser)]
#[command(name = "cgscope", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report what works on this host; exit 0 ok, 1 degraded, 2 cannot run.
    Check(CheckConfig),
    /// Attach the probes, sample one window, print one entry per cgroup.
    Snapshot(SnapshotConfig),
    /// Run the agent: sample every interval, serve the HTTP API.
    Run(RunConfig),
    /// Live view of the containers (or pods), sortable; `--once` for plain text.
    Top(TopConfig),
    /// Investigations: checks with thresholds, findings with evidence and next steps.
    #[command(subcommand)]
    Playbook(PlaybookCommand),
}

#[derive(Subcommand)]
enum PlaybookCommand {
    /// The playbooks and the question each answers.
    List,
    /// A playbook's page: when to use it, how to read it, its checks.
    Explain { name: String },
    /// Sample one window and report the playbook's findings, worst first.
    Run(PlaybookRunConfig),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Run(_) => "info",
        // Warnings would write over the screen; top shows what is not attached.
        Command::Top(_) => "error",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format(log_line)
        .init();
    let result = match cli.command {
        Command::Check(config) => return check_command(&config),
        Command::Snapshot(config) => snapshot_command(&config),
        Command::Run(config) => run_command(config),
        Command::Top(config) => top_command(config),
        Command::Playbook(command) => playbook_command(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cgscope: {}", text::escape_lines(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}

/// env_logger's line with the message [escaped](text::escape_lines): messages carry
/// cgroup paths and names that containers chose.
fn log_line(buf: &mut env_logger::fmt::Formatter, record: &log::Record) -> std::io::Result<()> {
    use std::io::Write as _;
    let style = buf.default_level_style(record.level());
    writeln!(
        buf,
        "[{} {style}{:<5}{style:#} {}] {}",
        buf.timestamp(),
        record.level(),
        record.target(),
        text::escape_lines(&record.args().to_string())
    )
}

fn check_command(config: &CheckConfig) -> ExitCode {
    let report = check::run(&config.sampling.sampler());
    match config.format {
        CheckFormat::Text => println!("{report}"),
        CheckFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("cgscope: {e}"),
        },
    }
    ExitCode::from(report.exit_code as u8)
}

/// Attaches the probes, samples one window of `duration` and returns it; `started` is
/// called when the window begins (probes attached, baseline read).
fn one_window(
    sampling: &SamplerConfig,
    duration: Duration,
    prefix: Option<&str>,
    started: impl FnOnce(),
) -> anyhow::Result<Snapshot> {
    let mut sampler = Sampler::start(sampling)?;
    for probe in sampler.probes().status().iter().filter(|p| !p.attached) {
        log::warn!(
            "probe {} not attached: {}",
            probe.name,
            probe.error.as_deref().unwrap_or("?")
        );
    }
    started();
    std::thread::sleep(duration);
    // One window is all these commands print: its names must not depend on which
    // runtime answered first (a socket-activated runtime can take seconds).
    sampler.wait_for_names();
    Ok(sampler.sample(prefix))
}

/// Says on stderr when a one-window command's window starts, for whoever starts the
/// workload to look at (the probes take seconds to load on a slow machine).
fn say_window_starts(command: &str, duration: Duration) {
    eprintln!("cgscope: {command}: sampling a {duration:?} window");
}

fn snapshot_command(config: &SnapshotConfig) -> anyhow::Result<()> {
    let sampling = config.sampling.sampler();
    let started = || say_window_starts("snapshot", config.duration);
    let snapshot = one_window(
        &sampling,
        config.duration,
        config.cgroup.as_deref(),
        started,
    )?;
    match config.format {
        SnapshotFormat::Json => println!("{}", serde_json::to_string_pretty(&snapshot)?),
        SnapshotFormat::Table => print!("{}", table::render(&snapshot)),
    }
    Ok(())
}

fn top_command(config: TopConfig) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let sampling = config.sampling.sampler();
    if config.once || !std::io::stdout().is_terminal() {
        let snapshot = one_window(&sampling, config.interval, None, || {})?;
        print!("{}", top::text(&snapshot, config.pods, config.sort));
        return Ok(());
    }
    top::ui::run(sampling, config.interval, config.pods, config.sort)
}

fn playbook_command(command: PlaybookCommand) -> anyhow::Result<()> {
    match command {
        PlaybookCommand::List => {
            for p in playbook::all()? {
                println!("{:<16} {}", p.name, p.summary);
            }
        }
        PlaybookCommand::Explain { name } => print!("{}", playbook::find(&name)?.page),
        PlaybookCommand::Run(config) => {
            let playbook = playbook::find(&config.name)?;
            let started = || say_window_starts(&playbook.name, config.duration);
            let snapshot = one_window(&config.sampling.sampler(), config.duration, None, started)?;
            let targets = playbook::run::examined(&playbook, &snapshot, config.target.as_deref());
            if targets.is_empty() {
                anyhow::bail!(
                    "no cgroup matches {:?} (a container or pod name, namespace, id, or a path starting with /)",
                    config.target.as_deref().unwrap_or("")
                );
            }
            let report = playbook::run::evaluate(&playbook, &snapshot, &targets);
            match config.format {
                ReportFormat::Text => print!("{}", report.text()),
                ReportFormat::Markdown => print!("{}", report.markdown()),
                ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            }
        }
    }
    Ok(())
}

fn run_command(config: RunConfig) -> anyhow::Result<()> {
    // OTLP settings first: a bad one is reported before anything attaches.
    let mut warnings = Vec::new();
    let otlp = OtlpSettings::from_env(|k| std::env::var(k).ok(), &mut warnings);
    for w in &warnings {
        log::warn!("{w}");
    }
    let interval = config
        .interval
        .or(otlp.as_ref().and_then(|o| o.interval))
        .unwrap_or(DEFAULT_INTERVAL);

    // Attach first and give up what only attaching needs, before any other thread
    // exists: capabilities are per thread, later threads inherit the reduced sets.
    let sampler = Sampler::start(&SamplerConfig {
        drop_capabilities: true,
        ..config.sampling.sampler()
    })?;
    for probe in sampler.probes().status() {
        match probe.error {
            None if !probe.attached => log::info!("probe {} off (--probes)", probe.name),
            None => log::info!("probe {} attached", probe.name),
            Some(e) => log::warn!("probe {} not attached: {e}", probe.name),
        }
    }

    // Two workers: the delivery task never waits behind a slow HTTP client.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // The gRPC channel spawns its connection task on the runtime it is built in.
    let transport = {
        let _in_runtime = runtime.enter();
        otlp.as_ref()
            .map(|o| Transport::new(o).map(|t| (t, o)))
            .transpose()
            .map_err(anyhow::Error::msg)?
    };
    let listener = runtime
        .block_on(api::bind(config.listen))
        .map_err(anyhow::Error::msg)?;

    let (stop_delivery, stop_rx) = tokio::sync::watch::channel(false);
    let exposition = Arc::new(Exposition::new(AgentResource::from_env(|k| {
        std::env::var(k).ok()
    })));
    let mut exporter = Exporter {
        exposition: exposition.clone(),
        filter: config.export.filter(),
        otlp: None,
        scan_errors: Default::default(),
    };
    let delivery = transport.map(|(transport, settings)| {
        let queue = Arc::new(Queue::new(QueueLimits::default()));
        exporter.otlp = Some((queue.clone(), settings.temporality));
        log::info!(
            "exporting OTLP to {} ({:?}{}, {:?} temporality)",
            settings.endpoint,
            settings.protocol,
            if settings.gzip { ", gzip" } else { "" },
            settings.temporality
        );
        runtime.spawn(delivery::run(
            queue,
            transport,
            stop_rx,
            Duration::from_secs(5),
        ))
    });
    if delivery.is_none() {
        log::info!("OTLP export off (set OTEL_EXPORTER_OTLP_ENDPOINT to turn it on)");
    }
    log::info!(
        "serving http://{}/metrics and /api/v1/..., window {interval:?}",
        config.listen
    );

    let (latest_tx, latest_rx) = tokio::sync::watch::channel(None);
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    // File reads and map syscalls block: the sampler has its own thread.
    let sampling = std::thread::Builder::new()
        .name("sampler".into())
        .spawn(move || sample_loop(sampler, exporter, interval, &stop_rx, &latest_tx))
        .context("starting the sampler thread")?;

    let served = runtime.block_on(async {
        let state = api::ApiState {
            latest: latest_rx,
            exposition,
            interval,
            started: Instant::now(),
        };
        let limits = cgscope::export::serve::ServeLimits::default();
        cgscope::export::serve::serve(listener, api::router(state), limits, shutdown_signal())
            .await;
        Ok::<(), std::io::Error>(())
    });
    let _ = stop_tx.send(());
    if sampling.join().is_err() {
        log::error!("the sampler thread panicked");
    }
    // The last window is queued: give the collector a few seconds for it.
    let _ = stop_delivery.send(true);
    if let Some(task) = delivery {
        let _ = runtime.block_on(task);
    }
    log::info!("stopped; probes detached");
    served.context("HTTP server")
}

/// Samples at fixed deadlines (no drift) until told to stop, then drops the sampler,
/// which detaches the probes.
fn sample_loop(
    mut sampler: Sampler,
    mut exporter: Exporter,
    interval: Duration,
    stop: &mpsc::Receiver<()>,
    latest: &tokio::sync::watch::Sender<Option<Arc<Published>>>,
) {
    let mut deadline = Instant::now() + interval;
    // Anything but a timeout (a stop message, or the sender gone) ends the loop.
    while let Err(mpsc::RecvTimeoutError::Timeout) =
        stop.recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        deadline += interval;
        let started = Instant::now();
        let snapshot = sampler.sample(None);
        let scan = started.elapsed();
        exporter.window(&snapshot, scan);
        latest.send_replace(Some(Arc::new(Published::new(snapshot))));
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                log::error!("cannot handle SIGTERM: {e}");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => log::info!("SIGINT: shutting down"),
        () = term => log::info!("SIGTERM: shutting down"),
    }
}
