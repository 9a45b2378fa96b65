//! Shell completions and the man page, generated from the same clap definitions as `--help`, so
//! they can never disagree with it (clap_complete, clap_mangen).

use clap::CommandFactory;

use super::Exit;
use crate::cli::Cli;
use crate::ui::output;

/// `civitai-dl completions <shell>`: the completion script on standard output.
pub(super) fn completions(shell: clap_complete::Shell) -> anyhow::Result<Exit> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "civitai-dl", &mut script);
    print(&script)
}

/// `civitai-dl man`: the man page (roff) on standard output.
pub(super) fn man_page() -> anyhow::Result<Exit> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    print(&page)
}

fn print(bytes: &[u8]) -> anyhow::Result<Exit> {
    output::bytes(bytes)?;
    Ok(Exit::Success)
}
