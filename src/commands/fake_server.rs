//! `civitai-dl fake-server`: the offline fake Civitai on its own, for trying other tools (or this
//! one) against it by hand.

use std::time::Duration;

use anyhow::Context;
use civitai_dl_fake::{Catalog, FakeCivitai, Knobs};

use super::Exit;
use crate::cli::FakeServerArgs;
use crate::ui::output;

#[cfg(feature = "dev-tools")]
pub(super) async fn fake_server(args: FakeServerArgs) -> anyhow::Result<Exit> {
    let catalog = match args.uniform {
        Some(n) => Catalog::uniform(n, args.file_size),
        None => Catalog::demo(),
    };
    let knobs = Knobs {
        bandwidth: args.bandwidth,
        api_latency: Duration::from_millis(args.api_latency_ms),
        storage_latency: Duration::from_millis(args.storage_latency_ms),
        ..Knobs::default()
    };
    let server = FakeCivitai::start(catalog, knobs)
        .await
        .context("cannot start the fake Civitai server")?;
    output::line(format_args!("fake Civitai API:     {}", server.api_url()))?;
    output::line(format_args!(
        "fake storage host:    {}",
        server.storage_url()
    ))?;
    if let Some(key) = server.catalog().valid_keys.first() {
        output::line(format_args!("valid API key:        {key}"))?;
    }
    let ids: Vec<String> = server
        .catalog()
        .models
        .iter()
        .take(10)
        .map(|m| m.id.to_string())
        .collect();
    output::line(format_args!("models:               {}", ids.join(" ")))?;
    output::line(format_args!(
        "try: civitai-dl --base-url {} download {} -o /tmp/models",
        server.api_url(),
        ids.first().map(String::as_str).unwrap_or("1")
    ))?;
    output::line("Ctrl-C stops the server.")?;
    server
        .serve_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    Ok(Exit::Success)
}
