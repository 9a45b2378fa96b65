//! `civitai-dl bench`: sequential against experimental on the fake Civitai, A/B and soak.

use anyhow::Context;

use super::{Exit, usage};
use crate::cli::{BenchArgs, GlobalArgs};

/// `civitai-dl bench` waits on child processes, so it runs on the blocking pool.
#[cfg(feature = "dev-tools")]
pub(super) async fn bench(global: GlobalArgs, args: BenchArgs) -> anyhow::Result<Exit> {
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
