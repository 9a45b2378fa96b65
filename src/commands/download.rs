//! `civitai-dl download`: plan the targets, run them with the driver the settings ask for, and
//! print the summary. The run's subscribers (metrics, failsafe, bars) are composed here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::info::show_plan;
use super::{
    Exit, build_api, check_key, collect_targets, performance, selection, usage, watch_ctrl_c,
};
use crate::cli::DownloadArgs;
use crate::settings::Settings;
use crate::ui::progress::Progress;
use civitai_dl_engine::civitai::target::Target;
use civitai_dl_engine::fetch::{DownloadOptions, Downloader};
use civitai_dl_engine::observe::metrics::Metrics;
use civitai_dl_engine::observe::monitor::{Monitor, MonitorOptions};
use civitai_dl_engine::observe::report::{FileDetail, RunReport, StopReason};
use civitai_dl_engine::observe::{Fanout, Reporter};
use civitai_dl_engine::plan::naming::Layout;
use civitai_dl_engine::plan::{Planner, Selection, Step};
use civitai_dl_engine::run::{Failsafe, Performance, Run, RunParts, Work, run_with_failsafe};
use civitai_dl_engine::sidecar::SidecarKind;
use civitai_dl_engine::state::StateStore;

/// What one download run needs beyond the settings.
pub(super) struct DownloadRequest {
    pub(super) targets: Vec<Target>,
    pub(super) selection: Selection,
    pub(super) output: PathBuf,
    pub(super) layout: Layout,
    pub(super) sidecars: Vec<SidecarKind>,
    pub(super) dry_run: bool,
    pub(super) state_file: Option<PathBuf>,
    pub(super) download: DownloadOptions,
    pub(super) performance: Performance,
    pub(super) monitor: MonitorOptions,
}

pub(super) async fn download(
    settings: Settings,
    args: DownloadArgs,
    json: bool,
    progress: Progress,
) -> anyhow::Result<Exit> {
    let targets = collect_targets(&args.targets)?;
    let performance = performance(&settings, &args.performance)?;
    let (output, layout) = args.placement.resolve(&settings);
    let request = DownloadRequest {
        selection: selection(&settings, &args.selection),
        output,
        layout,
        sidecars: chosen_sidecars(&settings, &args),
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
        monitor: crate::settings::monitor_options(&settings.monitor, &args.monitor)?,
        targets,
    };
    execute(&settings, request, json, progress).await
}

/// `--sidecars` over `--no-metadata` (clap refuses both) over the config file's choice.
fn chosen_sidecars(settings: &Settings, args: &DownloadArgs) -> Vec<SidecarKind> {
    let mut kinds = if args.no_metadata {
        Vec::new()
    } else if args.sidecars.is_empty() {
        settings.sidecars.clone()
    } else {
        args.sidecars.clone()
    };
    kinds.sort_unstable();
    kinds.dedup();
    kinds
}

pub(super) async fn execute(
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
    check_output_dir(&request.output)?;
    if request.layout == Layout::Invoke {
        check_not_invokeai_models(&request.output)?;
    }
    check_key(&api).await?;
    let planner = Planner::new(
        api.clone(),
        request.selection.clone(),
        request.output.clone(),
        request.layout,
        request.sidecars.clone(),
    );
    if request.dry_run {
        planner.expect(&request.targets).await;
        return show_plan(&planner, &request.targets, json, &cancel, &progress).await;
    }
    std::fs::create_dir_all(&request.output).map_err(|e| {
        usage(format!(
            "cannot create the output directory {}: {e}",
            request.output.display()
        ))
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
        report_detail: if json {
            FileDetail::Every
        } else {
            FileDetail::Problems
        },
    }));
    run.expect(&request.targets).await;
    tokio::spawn(
        run.clone()
            .watch_emergency_stop(request.performance.emergency_stop_file.clone()),
    );
    let queue: Vec<_> = request
        .targets
        .into_iter()
        .map(|target| Work::Plan(Step::Target(target)))
        .collect();
    progress.planning(queue.len() as u64);
    let mut monitor = Monitor::start(metrics.clone(), request.monitor);
    run_with_failsafe(&run, &failsafe, &request.performance, queue).await;
    monitor.stop().await;
    progress.finish();
    let mut report = run.finish_report();
    report.metrics = metrics.report();
    let saved = monitor.save(&report.metrics).await;
    if let Err(error) = &saved {
        tracing::error!("{error}");
    }
    print_report(&report, json)?;
    Ok(match exit_for(&report) {
        Exit::Success if saved.is_err() => Exit::SomeFailed,
        exit => exit,
    })
}

/// The output folder, or the nearest part of its path that exists, must be a folder: checked
/// before any request, since nothing could be saved otherwise.
fn check_output_dir(output: &Path) -> anyhow::Result<()> {
    let existing = output.ancestors().find(|p| p.exists());
    match existing {
        Some(found) if !found.is_dir() => Err(usage(format!(
            "the output directory {} is not a directory ({} is a file): give a folder with -o \
             (it is created if missing)",
            output.display(),
            found.display()
        ))),
        _ => Ok(()),
    }
}

/// InvokeAI owns its `models/` folder (it moves what it installs into `models/<random key>/` and
/// keeps its database in step), so `--layout invoke` refuses to write anywhere under it: our tree
/// lives elsewhere and InvokeAI registers it in place.
fn check_not_invokeai_models(output: &Path) -> anyhow::Result<()> {
    let absolute = std::path::absolute(output).unwrap_or_else(|_| output.to_path_buf());
    let models = absolute.ancestors().find(|dir| {
        dir.file_name().is_some_and(|name| name == "models")
            && dir
                .parent()
                .is_some_and(|root| root.join("invokeai.yaml").is_file())
    });
    match models {
        Some(models) => Err(usage(format!(
            "{} is inside InvokeAI's own models folder {}, which InvokeAI manages: give --root a              folder of its own (for example {}) and register it in InvokeAI in place",
            output.display(),
            models.display(),
            models.with_file_name("civitai-dl").display()
        ))),
        None => Ok(()),
    }
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
        crate::ui::output::json(report)?;
    }
    Ok(())
}
