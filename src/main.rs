//! The `civitai-dl` binary: parse the command line and hand it to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    civitai_dl::commands::run(civitai_dl::cli::Cli::parse())
}
