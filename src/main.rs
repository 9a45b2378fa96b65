//! The `civitai-dl` binary: the command line, the settings merge, the commands, and what people
//! see. Everything that plans, fetches and verifies is the `civitai-dl-engine` crate; this crate
//! only turns arguments into the engine's option structs and renders what the engine reports.

use std::process::ExitCode;

use clap::Parser;

/// Command-line definition (clap types only).
mod cli;

/// Settings: defaults < config file < environment < command line, resolved into the engine's
/// option structs.
mod settings;

/// The commands, from parsed arguments to an exit code.
mod commands;

/// Progress bars, log lines and the final summary, for people.
mod ui;

fn main() -> ExitCode {
    commands::run(cli::Cli::parse())
}
