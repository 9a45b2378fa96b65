//! Log lines through tracing, written above the progress bars so they never tear them.
//! `-q` keeps errors only; each `-v` shows more of civitai-dl's own events.

use crate::cli::Cli;
use crate::ui::progress::Progress;

pub fn init_logging(cli: &Cli, progress: &Progress) {
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
        .with_target("civitai_dl_engine", level)
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
