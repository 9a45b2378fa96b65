//! Standard output: the plans, `--json` reports and listings a user pipes into other tools.
//!
//! `println!` panics when the reader has gone (`civitai-dl info … | head -1`). Here a closed pipe
//! just ends the output: the reader asked for no more, as with ripgrep. The run's exit code still
//! says how the work went (a failed download stays a failure). [`is_closed_pipe`] catches what
//! other writers report.

use std::fmt::Display;
use std::io::{self, Write};

/// Print `text` and a newline on standard output; nothing when the reader has closed it.
pub fn line(text: impl Display) -> io::Result<()> {
    bytes(format!("{text}\n").as_bytes())
}

/// Print `value` as pretty JSON and a newline on standard output, streamed rather than built
/// as a string first (the report of a 100,000-file run is tens of megabytes); nothing more when
/// the reader has closed it.
pub fn json(value: &impl serde::Serialize) -> io::Result<()> {
    let mut stdout = io::BufWriter::new(io::stdout().lock());
    let written = serde_json::to_writer_pretty(&mut stdout, value)
        .map_err(io::Error::from)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    match written {
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Write `bytes` to standard output as they are (a completion script, a man page); nothing when
/// the reader has closed it.
pub fn bytes(bytes: &[u8]) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Whether `error` (or what caused it) is a write to a pipe whose reader has closed it.
pub fn is_closed_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .any(|io| io.kind() == io::ErrorKind::BrokenPipe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_is_recognised_through_context() {
        let closed = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("printing the plan");
        assert!(is_closed_pipe(&closed));
        assert!(!is_closed_pipe(&anyhow::anyhow!("something else")));
    }
}
