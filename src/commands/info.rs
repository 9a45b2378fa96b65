//! `civitai-dl info` and `download --dry-run`: what would be fetched, and where, without fetching.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Exit, build_api, check_key, collect_targets, selection, watch_ctrl_c};
use crate::cli::InfoArgs;
use crate::settings::Settings;
use crate::ui::output;
use crate::ui::progress::Progress;
use civitai_dl_engine::civitai::target::Target;
use civitai_dl_engine::observe::Reporter;
use civitai_dl_engine::observe::metrics::Metrics;
use civitai_dl_engine::plan::{FileFacts, Planner, Step};

pub(super) async fn info(
    settings: Settings,
    args: InfoArgs,
    json: bool,
    progress: Progress,
) -> anyhow::Result<Exit> {
    let targets = collect_targets(&args.targets)?;
    let cancel = CancellationToken::new();
    watch_ctrl_c(cancel.clone());
    let api = build_api(&settings, cancel.clone(), Arc::new(Metrics::new()), None)?;
    check_key(&api).await?;
    let (output, layout) = args.placement.resolve(&settings);
    let planner = Planner::new(
        api,
        selection(&settings, &args.selection),
        output,
        layout,
        settings.sidecars.clone(),
    );
    show_plan(&planner, &targets, json, &cancel, &progress).await
}

/// Print what would be downloaded (`info`, `download --dry-run`). The plan is printed once
/// complete; until then a long list shows how planning goes.
pub(super) async fn show_plan(
    planner: &Planner,
    targets: &[Target],
    json: bool,
    cancel: &CancellationToken,
    progress: &Progress,
) -> anyhow::Result<Exit> {
    planner.expect(targets).await;
    progress.planning(targets.len() as u64);
    let mut all: Vec<FileFacts> = Vec::new();
    let mut failed = false;
    let mut steps: VecDeque<Step> = targets.iter().cloned().map(Step::Target).collect();
    while let Some(step) = steps.pop_front() {
        let result = planner.plan(&step).await;
        if matches!(step, Step::Target(_)) && !cancel.is_cancelled() {
            progress.on_target_planned();
        }
        match result {
            Ok(planned) => {
                for error in &planned.failures {
                    eprintln!("error: {error}");
                    failed = true;
                }
                all.extend(planned.jobs.into_iter().map(|job| job.facts));
                if let Some(next) = planned.next {
                    steps.push_front(Step::Page(Box::new(next)));
                }
            }
            Err(_) if cancel.is_cancelled() => return Ok(Exit::Interrupted),
            Err(error) => {
                eprintln!("error: {error}");
                failed = true;
            }
        }
    }
    progress.finish();
    if json {
        output::line(serde_json::to_string_pretty(&all)?)?;
    } else {
        for facts in &all {
            output::line(describe(facts))?;
        }
        let total: u64 = all.iter().filter_map(|f| f.size_bytes).sum();
        output::line(format_args!(
            "{} file(s), {} in all",
            all.len(),
            indicatif::HumanBytes(total)
        ))?;
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
        f.quant_type.clone(),
        f.primary.then(|| "primary".to_string()),
        f.early_access.then(|| "early access".to_string()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut text = format!(
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
    );
    for preview in &f.previews {
        text.push_str(&format!("\n  preview -> {}", preview.display()));
    }
    text
}
