//! The commands: turn parsed arguments and settings into a run, and a run into an exit code.

#[cfg(feature = "dev-tools")]
mod bench;
#[cfg(feature = "dev-tools")]
mod demo;
mod download;
#[cfg(feature = "dev-tools")]
mod fake_server;
mod identify;
mod info;
mod reference;
mod scan;
mod scan_sidecars;
mod verify;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, PerformanceArgs, SelectionArgs, TargetArgs};
use crate::settings::Settings;
use crate::ui::progress::Progress;
use civitai_dl_engine::civitai::target::{Target, parse_target_list};
use civitai_dl_engine::civitai::{ApiClient, ApiError, ApiOptions};
use civitai_dl_engine::http::limiter::RateLimiter;
use civitai_dl_engine::observe::Reporter;
use civitai_dl_engine::plan::Selection;
use civitai_dl_engine::run::Performance;

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

/// A config error, with the way round it for the commands that can work without settings.
fn offline_hint(error: crate::settings::ConfigError, command: &Command) -> anyhow::Error {
    let error = anyhow::Error::new(error);
    match command {
        Command::Scan(_) | Command::Verify(_) => usage(format!(
            "{error:#}; or run with --no-remote to work offline"
        )),
        _ => error,
    }
}

pub(super) fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError {
        message: message.into(),
    }
    .into()
}

/// Run a parsed command line to its exit code. Errors are printed as one line.
pub fn run(cli: Cli) -> ExitCode {
    let bars = !(cli.global.no_progress || cli.global.quiet)
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let progress = if bars {
        Progress::bars()
    } else {
        // Lines are info events: `-q` hides them with everything else below an error.
        Progress::lines(
            Some(Duration::from_secs(cli.global.progress_interval))
                .filter(|every| !every.is_zero()),
        )
    };
    crate::ui::logging::init_logging(&cli, &progress);
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
        // The reader of our output has gone (`| head`): it wanted no more, which is no failure.
        Err(error) if crate::ui::output::is_closed_pipe(&error) => Exit::Success.into(),
        Err(error) => {
            eprintln!("error: {error:#}");
            let exit = if error.downcast_ref::<UsageError>().is_some()
                || error
                    .downcast_ref::<crate::settings::ConfigError>()
                    .is_some()
                || error
                    .downcast_ref::<civitai_dl_engine::state::StateError>()
                    .is_some()
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
        Command::FakeServer(args) => fake_server::fake_server(args).await,
        #[cfg(feature = "dev-tools")]
        Command::Bench(args) => bench::bench(global, args).await,
        Command::Completions(args) => reference::completions(args.shell),
        Command::Man => reference::man_page(),
        // Offline they need no API settings, so a broken config file cannot stop them.
        Command::Scan(args) if args.no_remote => {
            scan::scan(args, None, global.json, progress).await
        }
        Command::Verify(args) if args.no_remote => {
            verify::verify(args, None, global.json, progress).await
        }
        command => {
            let settings =
                Settings::load(&global).map_err(|error| offline_hint(error, &command))?;
            if let Some(path) = &settings.config_file {
                tracing::debug!("settings from {}", path.display());
            }
            match command {
                Command::Download(args) => {
                    download::download(settings, *args, global.json, progress).await
                }
                Command::Info(args) => info::info(settings, args, global.json, progress).await,
                Command::Identify(args) => identify::identify(settings, args, global.json).await,
                Command::Scan(args) => {
                    scan::scan(args, Some(settings), global.json, progress).await
                }
                Command::Verify(args) => {
                    verify::verify(args, Some(settings), global.json, progress).await
                }
                #[cfg(feature = "dev-tools")]
                Command::Demo(args) => demo::demo(settings, args, global.json, progress).await,
                #[cfg(feature = "dev-tools")]
                Command::FakeServer(_) | Command::Bench(_) => unreachable!("handled above"),
                Command::Completions(_) | Command::Man => unreachable!("handled above"),
            }
        }
    }
}

/// Concurrency for this command; flags that have no effect are reported, not silently dropped.
pub(super) fn performance(
    settings: &Settings,
    args: &PerformanceArgs,
) -> anyhow::Result<Performance> {
    let (performance, warnings) =
        crate::settings::performance(&settings.experimental, &settings.failsafe, args)?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    Ok(performance)
}

pub(super) fn selection(settings: &Settings, args: &SelectionArgs) -> Selection {
    Selection {
        all_versions: args.all_versions,
        all_files: args.all_files,
        file_types: args.file_types.clone(),
        format: args.format.clone(),
        fp: args.fp.clone(),
        size: args.size.clone(),
        quant_type: args.quant_type.clone(),
        images: args.images.unwrap_or(settings.images),
        include_nsfw: settings.include_nsfw && !args.sfw_only,
    }
}

/// Every target from positional arguments, `--version`, `--user` and `--from-file`.
pub(super) fn collect_targets(args: &TargetArgs) -> anyhow::Result<Vec<Target>> {
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

/// The targets of a list file, or of standard input for `-`.
fn read_target_list(path: &Path) -> anyhow::Result<Vec<Target>> {
    let stdin = path == Path::new("-");
    let name = if stdin {
        "standard input".to_string()
    } else {
        path.display().to_string()
    };
    let text = if stdin {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|e| usage(format!("cannot read target list {name}: {e}")))?;
    let targets = parse_target_list(&text).map_err(|e| usage(format!("{name}: {e}")))?;
    if targets.is_empty() {
        bail!(usage(format!(
            "{name} holds no targets (only blank lines and # comments): put one model id, \
             Civitai URL or AIR on each line"
        )));
    }
    Ok(targets)
}

pub(super) fn build_api(
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
pub(super) async fn check_key(api: &ApiClient) -> anyhow::Result<()> {
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
pub(super) fn watch_ctrl_c(cancel: CancellationToken) {
    tokio::spawn(async move {
        if !stop_requested().await {
            return;
        }
        tracing::warn!("interrupted: finishing up and saving state (Ctrl-C again to quit at once)");
        cancel.cancel();
        if stop_requested().await {
            std::process::exit(Exit::Interrupted as i32);
        }
    });
}

/// Wait for Ctrl-C, or SIGTERM on Unix (what service managers, `timeout` and `docker stop`
/// send): both stop the run in order. False when no signal can be watched.
async fn stop_requested() -> bool {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            return tokio::select! {
                ctrl_c = tokio::signal::ctrl_c() => ctrl_c.is_ok(),
                term = terminate.recv() => term.is_some(),
            };
        }
    }
    tokio::signal::ctrl_c().await.is_ok()
}
