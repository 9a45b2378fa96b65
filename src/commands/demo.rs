//! `civitai-dl demo`: the main job, offline. A fake Civitai on 127.0.0.1 with a few models (one of
//! them corrupted on its first attempt) and a real download into a fresh folder.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use civitai_dl_fake::{Catalog, FakeCivitai, Knobs};

use super::download::{DownloadRequest, execute};
use super::{Exit, performance};
use crate::cli::DemoArgs;
use crate::settings::Settings;
use crate::ui::progress::Progress;
use civitai_dl_engine::civitai::target::Target;
use civitai_dl_engine::fetch::DownloadOptions;
use civitai_dl_engine::plan::Selection;
use civitai_dl_engine::plan::naming::Layout;
use civitai_dl_engine::sidecar::SidecarKind;

#[cfg(feature = "dev-tools")]
pub(super) async fn demo(
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
    settings.retry = civitai_dl_engine::http::retry::RetryPolicy::new(
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
        sidecars: vec![SidecarKind::CivitaiInfo],
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
        monitor: crate::settings::monitor_options(&settings.monitor, &args.monitor)?,
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
