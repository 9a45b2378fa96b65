//! Log lines through tracing, written above the progress bars so they never tear them.
//! `-q` keeps errors only. By default civitai-dl's own events show from info up: one line per
//! downloaded file, warnings (retries among them) and errors. `-v` adds one line per request
//! (the engine's request target), `-vv` debug detail and the headers behind each decision,
//! `-vvv` everything.

use civitai_dl_engine::observe::requests;
use tracing_subscriber::filter::{LevelFilter, Targets};

use crate::cli::Cli;
use crate::ui::progress::Progress;

pub fn init_logging(cli: &Cli, progress: &Progress) {
    use tracing_subscriber::prelude::*;
    let filter = filter(cli.global.quiet, cli.global.verbose);
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

/// Which events show for `-q` and each `-v`.
fn filter(quiet: bool, verbose: u8) -> Targets {
    let (own, requests) = match (quiet, verbose) {
        (true, _) => (LevelFilter::ERROR, LevelFilter::OFF),
        (false, 0) => (LevelFilter::INFO, LevelFilter::OFF),
        (false, 1) => (LevelFilter::INFO, LevelFilter::INFO),
        (false, 2) => (LevelFilter::DEBUG, LevelFilter::DEBUG),
        (false, _) => (LevelFilter::TRACE, LevelFilter::TRACE),
    };
    Targets::new()
        .with_target("civitai_dl", own)
        .with_target("civitai_dl_engine", own)
        .with_target(requests::TARGET, requests)
        .with_default(LevelFilter::WARN.min(own))
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
    fn requests_show_from_one_v() {
        use tracing::Level;
        let shows = |quiet, verbose, target: &str, level| {
            filter(quiet, verbose).would_enable(target, &level)
        };
        assert!(!shows(false, 0, requests::TARGET, Level::INFO));
        assert!(shows(false, 0, "civitai_dl_engine::run", Level::INFO));
        assert!(shows(false, 1, requests::TARGET, Level::INFO));
        assert!(!shows(false, 1, requests::TARGET, Level::DEBUG));
        assert!(!shows(false, 1, "civitai_dl_engine::run", Level::DEBUG));
        assert!(shows(false, 2, requests::TARGET, Level::DEBUG));
        assert!(shows(false, 2, "civitai_dl_engine::run", Level::DEBUG));
        assert!(!shows(true, 2, requests::TARGET, Level::INFO));
        assert!(!shows(true, 0, "civitai_dl_engine::run", Level::WARN));
    }

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
