//! The commands: turn parsed arguments and settings into a run, and a run into an exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
#[cfg(feature = "dev-tools")]
use civitai_dl_fake::{Catalog, FakeCivitai, Knobs};
use tokio_util::sync::CancellationToken;

use crate::civitai::target::{Target, parse_target_list};
use crate::civitai::{ApiClient, ApiError, ApiOptions};
#[cfg(feature = "dev-tools")]
use crate::cli::{BenchArgs, DemoArgs, FakeServerArgs, GlobalArgs};
use crate::cli::{
    Cli, Command, DownloadArgs, InfoArgs, PerformanceArgs, SelectionArgs, TargetArgs,
};
use crate::config::Settings;
use crate::download::{DownloadOptions, Downloader};
use crate::http::limiter::RateLimiter;
use crate::observe::metrics::Metrics;
use crate::observe::monitor::{Monitor, MonitorOptions};
use crate::observe::report::{RunReport, StopReason};
use crate::observe::{Fanout, Reporter};
use crate::plan::naming::Layout;
use crate::plan::{FileFacts, Planner, Selection};
use crate::run::Performance;
use crate::run::{Failsafe, Run, RunParts, Work, run_with_failsafe};
use crate::state::StateStore;
use crate::ui::progress::Progress;

/// Exit codes, documented in the README.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Everything asked for is present and verified.
    Success = 0,
    /// Some targets or files failed; each is listed with its reason.
    SomeFailed = 1,
    /// Bad command line, config or API key: nothing was downloaded.
    Usage = 2,
    /// Civitai's 24-hour download quota is exhausted; state saved.
    QuotaExhausted = 3,
    /// The emergency stop file appeared; state saved, a rerun continues.
    EmergencyStop = 4,
    /// Interrupted (Ctrl-C); state saved, a rerun continues.
    Interrupted = 130,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// An error that maps to a particular exit code (anything else is a plain failure).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UsageError {
    message: String,
}

fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError {
        message: message.into(),
    }
    .into()
}

/// Run a parsed command line to its exit code. Errors are printed as one line.
pub fn run(cli: Cli) -> ExitCode {
    let progress = Progress::new(
        !(cli.global.no_progress || cli.global.quiet)
            && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    init_logging(&cli, &progress);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return Exit::SomeFailed.into();
        }
    };
    match runtime.block_on(dispatch(cli, progress)) {
        Ok(exit) => exit.into(),
        Err(error) => {
            eprintln!("error: {error:#}");
            let exit = if error.downcast_ref::<UsageError>().is_some()
                || error.downcast_ref::<crate::config::ConfigError>().is_some()
                || error.downcast_ref::<crate::state::StateError>().is_some()
            {
                Exit::Usage
            } else {
                Exit::SomeFailed
            };
            exit.into()
        }
    }
}

async fn dispatch(cli: Cli, progress: Progress) -> anyhow::Result<Exit> {
    let Cli { global, command } = cli;
    match command {
        #[cfg(feature = "dev-tools")]
        Command::FakeServer(args) => fake_server(args).await,
        #[cfg(feature = "dev-tools")]
        Command::Bench(args) => bench(global, args).await,
        command => {
            let settings = Settings::load(&global)?;
            if let Some(path) = &settings.config_file {
                tracing::debug!("settings from {}", path.display());
            }
            match command {
                Command::Download(args) => download(settings, *args, global.json, progress).await,
                Command::Info(args) => info(settings, args, global.json).await,
                #[cfg(feature = "dev-tools")]
                Command::Demo(args) => demo(settings, args, global.json, progress).await,
                #[cfg(feature = "dev-tools")]
                Command::FakeServer(_) | Command::Bench(_) => unreachable!("handled above"),
            }
        }
    }
}

/// `civitai-dl bench` waits on child processes, so it runs on the blocking pool.
#[cfg(feature = "dev-tools")]
async fn bench(global: GlobalArgs, args: BenchArgs) -> anyhow::Result<Exit> {
    let passed = tokio::task::spawn_blocking(move || crate::bench::run(&global, &args))
        .await
        .context("the bench task failed")?
        .map_err(|error| match error {
            crate::bench::BenchError::UnknownScenario { .. }
            | crate::bench::BenchError::Invalid(_) => usage(error.to_string()),
            other => other.into(),
        })?;
    Ok(if passed {
        Exit::Success
    } else {
        Exit::SomeFailed
    })
}

/// What one download run needs beyond the settings.
struct DownloadRequest {
    targets: Vec<Target>,
    selection: Selection,
    output: PathBuf,
    layout: Layout,
    metadata: bool,
    dry_run: bool,
    state_file: Option<PathBuf>,
    download: DownloadOptions,
    performance: Performance,
    monitor: MonitorOptions,
}

async fn download(
    settings: Settings,
    args: DownloadArgs,
    json: bool,
    progress: Progress,
) -> anyhow::Result<Exit> {
    let targets = collect_targets(&args.targets)?;
    let performance = performance(&settings, &args.performance)?;
    let request = DownloadRequest {
        selection: selection(&settings, &args.selection),
        output: args
            .output
            .clone()
            .unwrap_or_else(|| settings.output.clone()),
        layout: args.layout.unwrap_or(settings.layout),
        metadata: settings.metadata && !args.no_metadata,
        dry_run: args.dry_run,
        state_file: args.state_file.clone(),
        download: DownloadOptions {
            accept_hash_mismatch: args.accept_hash_mismatch || settings.accept_hash_mismatch,
            min_speed: args.min_speed.unwrap_or(settings.network.min_speed),
            min_speed_window: args
                .min_speed_window
                .map(Duration::from_secs)
                .unwrap_or(settings.network.min_speed_window),
            connect_timeout: settings.network.connect_timeout,
            read_timeout: settings.network.read_timeout,
            segments: performance.segments,
            segment_threshold: performance.segment_threshold,
            connections: performance.storage_connections(),
        },
        performance,
        monitor: crate::config::monitor_options(&settings.monitor, &args.monitor)?,
        targets,
    };
    execute(&settings, request, json, progress).await
}

async fn execute(
    settings: &Settings,
    request: DownloadRequest,
    json: bool,
    progress: Progress,
) -> anyhow::Result<Exit> {
    let cancel = CancellationToken::new();
    watch_ctrl_c(cancel.clone());
    let metrics = Arc::new(Metrics::new());
    let failsafe = Arc::new(Failsafe::new(request.performance.thresholds.clone()));
    let reporter: Arc<dyn Reporter> = Arc::new(Fanout::new(vec![
        metrics.clone(),
        failsafe.clone(),
        Arc::new(progress.clone()),
    ]));
    let api = build_api(
        settings,
        cancel.clone(),
        reporter.clone(),
        Some(&request.performance),
    )?;
    check_key(&api).await?;
    let planner = Planner::new(
        api.clone(),
        request.selection.clone(),
        request.output.clone(),
        request.layout,
        request.metadata,
    );
    if request.dry_run {
        return show_plan(&planner, &request.targets, json, &cancel).await;
    }
    std::fs::create_dir_all(&request.output).with_context(|| {
        format!(
            "cannot create the output directory {}",
            request.output.display()
        )
    })?;
    let state_path = request
        .state_file
        .clone()
        .unwrap_or_else(|| request.output.join(".civitai-dl").join("state.json"));
    let state = StateStore::open(&state_path)?;
    let downloader = Arc::new(Downloader::new(
        api.clone(),
        settings.retry.clone(),
        request.download.clone(),
        cancel.clone(),
        reporter.clone(),
    )?);
    let run = Arc::new(Run::new(RunParts {
        planner,
        downloader,
        api,
        reporter,
        state,
        output: request.output.clone(),
        performance: request.performance.clone(),
        cancel,
    }));
    tokio::spawn(
        run.clone()
            .watch_emergency_stop(request.performance.emergency_stop_file.clone()),
    );
    let queue = request.targets.into_iter().map(Work::Plan).collect();
    let mut monitor = Monitor::start(metrics.clone(), request.monitor);
    run_with_failsafe(&run, &failsafe, &request.performance, queue).await;
    monitor.stop().await;
    progress.finish();
    let mut report = run.finish_report();
    report.metrics = metrics.report();
    monitor.save(&report.metrics).await;
    print_report(&report, json)?;
    Ok(exit_for(&report))
}

fn exit_for(report: &RunReport) -> Exit {
    match report.stopped {
        Some(StopReason::QuotaExhausted) => Exit::QuotaExhausted,
        Some(StopReason::Interrupted) => Exit::Interrupted,
        Some(StopReason::EmergencyStop) => Exit::EmergencyStop,
        None if report.has_failures() => Exit::SomeFailed,
        None => Exit::Success,
    }
}

fn print_report(report: &RunReport, json: bool) -> anyhow::Result<()> {
    eprintln!("{}", crate::ui::summary::render(report));
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    }
    Ok(())
}

async fn info(settings: Settings, args: InfoArgs, json: bool) -> anyhow::Result<Exit> {
    let targets = collect_targets(&args.targets)?;
    let cancel = CancellationToken::new();
    watch_ctrl_c(cancel.clone());
    let api = build_api(&settings, cancel.clone(), Arc::new(Metrics::new()), None)?;
    check_key(&api).await?;
    let planner = Planner::new(
        api,
        selection(&settings, &args.selection),
        settings.output.clone(),
        settings.layout,
        settings.metadata,
    );
    show_plan(&planner, &targets, json, &cancel).await
}

/// Print what would be downloaded (`info`, `download --dry-run`).
async fn show_plan(
    planner: &Planner,
    targets: &[Target],
    json: bool,
    cancel: &CancellationToken,
) -> anyhow::Result<Exit> {
    let mut all: Vec<FileFacts> = Vec::new();
    let mut failed = false;
    for target in targets {
        match planner.plan(target).await {
            Ok(jobs) => all.extend(jobs.into_iter().map(|job| job.facts)),
            Err(_) if cancel.is_cancelled() => return Ok(Exit::Interrupted),
            Err(error) => {
                eprintln!("error: {error}");
                failed = true;
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        for facts in &all {
            println!("{}", describe(facts));
        }
        let total: u64 = all.iter().filter_map(|f| f.size_bytes).sum();
        println!(
            "{} file(s), {} in all",
            all.len(),
            indicatif::HumanBytes(total)
        );
    }
    Ok(if failed {
        Exit::SomeFailed
    } else {
        Exit::Success
    })
}

fn describe(f: &FileFacts) -> String {
    let details: Vec<String> = [
        Some(f.file_type.clone()),
        f.format.clone(),
        f.fp.clone(),
        f.size_kind.clone(),
        f.primary.then(|| "primary".to_string()),
        f.early_access.then(|| "early access".to_string()),
    ]
    .into_iter()
    .flatten()
    .collect();
    format!(
        "{} \"{}\" [{}] version {} \"{}\"{}\n  file {} {} ({})\n  size {}  sha256 {}\n  -> {}",
        f.model_id,
        f.model_name,
        f.model_type,
        f.version_id,
        f.version_name,
        f.base_model
            .as_ref()
            .map(|b| format!(" ({b})"))
            .unwrap_or_default(),
        f.file_id,
        f.file_name,
        details.join(", "),
        f.size_bytes
            .map(|b| indicatif::HumanBytes(b).to_string())
            .unwrap_or_else(|| "unknown".into()),
        f.sha256.as_deref().unwrap_or("not published"),
        f.path.display()
    )
}

#[cfg(feature = "dev-tools")]
async fn demo(
    mut settings: Settings,
    args: DemoArgs,
    json: bool,
    progress: Progress,
) -> anyhow::Result<Exit> {
    let performance = performance(&settings, &args.performance)?;
    let catalog = Catalog::demo();
    let targets: Vec<Target> = catalog
        .models
        .iter()
        .map(|m| Target::Model {
            id: m.id,
            version: None,
        })
        .collect();
    let knobs = Knobs {
        bandwidth: Some(DEMO_BANDWIDTH),
        ..Knobs::default()
    };
    let server = FakeCivitai::start(catalog, knobs)
        .await
        .context("cannot start the fake Civitai server")?;
    settings.base_url = server.api_url();
    settings.fallback_base_urls.clear();
    settings.api_key = server.catalog().valid_keys.first().cloned();
    settings.retry = crate::http::retry::RetryPolicy::new(
        DEMO_RETRY_DELAYS_MS
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect(),
        0.2,
    );
    let output = match args.output {
        Some(dir) => dir,
        None => fresh_temp_dir()?,
    };
    progress.println(&format!(
        "demo: fake Civitai at {} (storage {}); downloading into {}",
        server.api_url(),
        server.storage_url(),
        output.display()
    ));
    let request = DownloadRequest {
        targets,
        selection: Selection {
            images: 2,
            include_nsfw: true,
            ..Selection::default()
        },
        output,
        layout: Layout::Flat,
        metadata: true,
        dry_run: false,
        state_file: None,
        download: DownloadOptions {
            accept_hash_mismatch: false,
            min_speed: 0,
            min_speed_window: Duration::from_secs(60),
            connect_timeout: settings.network.connect_timeout,
            read_timeout: Duration::from_secs(10),
            segments: performance.segments,
            segment_threshold: performance.segment_threshold,
            connections: performance.storage_connections(),
        },
        performance,
        monitor: crate::config::monitor_options(&settings.monitor, &args.monitor)?,
    };
    execute(&settings, request, json, progress).await
}

/// The demo's storage bandwidth: slow enough to watch the bars, fast enough to end in a minute.
#[cfg(feature = "dev-tools")]
const DEMO_BANDWIDTH: u64 = 12 * 1024 * 1024;
/// The demo's retry waits: short, so its injected faults recover visibly and quickly.
#[cfg(feature = "dev-tools")]
const DEMO_RETRY_DELAYS_MS: [u64; 3] = [300, 1_000, 2_000];

#[cfg(feature = "dev-tools")]
fn fresh_temp_dir() -> anyhow::Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("civitai-dl-demo-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

#[cfg(feature = "dev-tools")]
async fn fake_server(args: FakeServerArgs) -> anyhow::Result<Exit> {
    let catalog = match args.uniform {
        Some(n) => Catalog::uniform(n, args.file_size),
        None => Catalog::demo(),
    };
    let knobs = Knobs {
        bandwidth: args.bandwidth,
        api_latency: Duration::from_millis(args.api_latency_ms),
        ..Knobs::default()
    };
    let server = FakeCivitai::start(catalog, knobs)
        .await
        .context("cannot start the fake Civitai server")?;
    println!("fake Civitai API:     {}", server.api_url());
    println!("fake storage host:    {}", server.storage_url());
    if let Some(key) = server.catalog().valid_keys.first() {
        println!("valid API key:        {key}");
    }
    let ids: Vec<String> = server
        .catalog()
        .models
        .iter()
        .take(10)
        .map(|m| m.id.to_string())
        .collect();
    println!("models:               {}", ids.join(" "));
    println!(
        "try: civitai-dl --base-url {} download {} -o /tmp/models",
        server.api_url(),
        ids.first().map(String::as_str).unwrap_or("1")
    );
    println!("Ctrl-C stops the server.");
    server
        .serve_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    Ok(Exit::Success)
}

/// Concurrency for this command; flags that have no effect are reported, not silently dropped.
fn performance(settings: &Settings, args: &PerformanceArgs) -> anyhow::Result<Performance> {
    let (performance, warnings) =
        crate::config::performance(&settings.experimental, &settings.failsafe, args)?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    Ok(performance)
}

fn selection(settings: &Settings, args: &SelectionArgs) -> Selection {
    Selection {
        all_versions: args.all_versions,
        all_files: args.all_files,
        file_types: args.file_types.clone(),
        format: args.format.clone(),
        fp: args.fp.clone(),
        size: args.size.clone(),
        images: args.images.unwrap_or(settings.images),
        include_nsfw: settings.include_nsfw && !args.sfw_only,
    }
}

/// Every target from positional arguments, `--version`, `--user` and `--from-file`.
fn collect_targets(args: &TargetArgs) -> anyhow::Result<Vec<Target>> {
    let mut targets = Vec::new();
    for text in &args.targets {
        targets.push(text.parse::<Target>().map_err(|e| usage(e.to_string()))?);
    }
    targets.extend(
        args.versions
            .iter()
            .map(|&id| Target::Version { id, file: None }),
    );
    targets.extend(args.users.iter().map(|username| Target::User {
        username: username.clone(),
    }));
    if let Some(path) = &args.from_file {
        targets.extend(read_target_list(path)?);
    }
    if targets.is_empty() {
        bail!(usage(
            "nothing to do: give a model id, Civitai URL or AIR, --version ID, --user NAME or --from-file FILE"
        ));
    }
    Ok(targets)
}

fn read_target_list(path: &Path) -> anyhow::Result<Vec<Target>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read target list {}: {e}", path.display())))?;
    parse_target_list(&text).map_err(|e| usage(format!("{}: {e}", path.display())))
}

fn build_api(
    settings: &Settings,
    cancel: CancellationToken,
    reporter: Arc<dyn Reporter>,
    performance: Option<&Performance>,
) -> anyhow::Result<Arc<ApiClient>> {
    let adaptive_rate = performance.is_some_and(|p| p.adaptive_rate);
    let (rate, burst) = (settings.network.rate_limit, settings.network.rate_burst);
    let limiter = Arc::new(if adaptive_rate {
        RateLimiter::adaptive(rate, burst)
    } else {
        RateLimiter::new(rate, burst)
    });
    let mut hosts = vec![settings.base_url.clone()];
    hosts.extend(settings.fallback_base_urls.iter().cloned());
    let api = ApiClient::new(
        ApiOptions {
            hosts,
            api_key: settings.api_key.clone(),
            connect_timeout: settings.network.connect_timeout,
            request_timeout: settings.network.api_timeout,
            connections: performance.map_or(1, |p| p.api),
        },
        limiter,
        settings.retry.clone(),
        cancel,
        reporter,
    )
    .context("cannot set up the HTTP client")?;
    Ok(Arc::new(api))
}

/// Check a given key once: Civitai silently treats a bad key as anonymous, which would turn into
/// confusing "log in" failures file after file.
async fn check_key(api: &ApiClient) -> anyhow::Result<()> {
    if !api.has_key() {
        return Ok(());
    }
    match api.me().await {
        Ok(_) => Ok(()),
        Err(error @ ApiError::KeyRejected) => Err(usage(error.to_string())),
        Err(error) => {
            tracing::warn!("could not check the API key ({error}); going on");
            Ok(())
        }
    }
}

/// First Ctrl-C: stop starting work, keep `.part` files, save state. Second: leave at once.
fn watch_ctrl_c(cancel: CancellationToken) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        tracing::warn!("interrupted: finishing up and saving state (Ctrl-C again to quit at once)");
        cancel.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(Exit::Interrupted as i32);
        }
    });
}

fn init_logging(cli: &Cli, progress: &Progress) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let level = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => LevelFilter::ERROR,
        (false, 0) => LevelFilter::INFO,
        (false, 1) => LevelFilter::DEBUG,
        (false, _) => LevelFilter::TRACE,
    };
    let filter = Targets::new()
        .with_target("civitai_dl", level)
        .with_default(LevelFilter::WARN.min(level));
    let progress = progress.clone();
    let layer = tracing_subscriber::fmt::layer()
        .without_time()
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(move || progress.log_writer());
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
}
