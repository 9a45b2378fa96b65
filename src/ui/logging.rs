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
        .with_ansi(colors(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR"),
        ))
        .with_writer(move || progress.log_writer());
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
}

/// Colour only on a terminal, and not when `NO_COLOR` is set to anything but the empty string
/// (<https://no-color.org>).
fn colors(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        assert!(colors(true, None));
        assert!(
            colors(true, Some("".into())),
            "an empty NO_COLOR counts as unset"
        );
        assert!(!colors(true, Some("1".into())));
        assert!(!colors(false, None));
    }
}
