//! What a terminal shows, captured through a pseudo-terminal (`script` from util-linux): the bars
//! are drawn only when stderr is a terminal, so only a pty can see them.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use civitai_dl_fake::Knobs;

use crate::support::{Sandbox, first_file, len_or_zero, model, poll_until, serve, slow_list};

const MIB: u64 = 1024 * 1024;
/// The width of the pseudo-terminal.
const COLUMNS: usize = 160;

/// Runs civitai-dl with `args` under a pseudo-terminal; what the terminal received.
fn on_a_terminal(sandbox: &Sandbox, args: &[String]) -> String {
    let output = terminal_command(sandbox, args)
        .output()
        .expect("run script(1)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `script` running civitai-dl with `args` on a pseudo-terminal of its own.
fn terminal_command(sandbox: &Sandbox, args: &[String]) -> Command {
    let binary = assert_cmd::cargo::cargo_bin!("civitai-dl");
    let quoted: Vec<String> = std::iter::once(binary.display().to_string())
        .chain(args.iter().cloned())
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let mut script = Command::new("script");
    // Scrubbed like every other test's environment, so no real key or config reaches the run.
    for var in civitai_dl_engine::env::ENV_VARS {
        script.env_remove(var);
    }
    script
        .args(["-qfec", &quoted.join(" "), "/dev/null"])
        .env("HOME", &sandbox.home)
        .env("XDG_CONFIG_HOME", &sandbox.home)
        .env("COLUMNS", COLUMNS.to_string())
        .current_dir(&sandbox.home);
    script
}

/// What the terminal shows at the end: the output replayed on a grid of lines, with the cursor
/// moves and erasures the bars use (up, down, column, erase line, erase below).
fn final_screen(output: &str) -> Vec<String> {
    let mut rows: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = output.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' if chars.peek() == Some(&'[') => {
                chars.next();
                let mut params = String::new();
                let code = loop {
                    match chars.next() {
                        Some(p) if p.is_ascii_digit() || p == ';' || p == '?' => params.push(p),
                        other => break other,
                    }
                };
                let n = params
                    .trim_start_matches('?')
                    .parse::<usize>()
                    .unwrap_or(1)
                    .max(1);
                match code {
                    Some('A') => row = row.saturating_sub(n),
                    Some('B') => row += n,
                    Some('G') => col = n - 1,
                    Some('K') if params == "2" => rows[row].clear(),
                    Some('K') => rows[row].truncate(col),
                    Some('J') => {
                        rows[row].truncate(col);
                        rows.truncate(row + 1);
                    }
                    _ => {}
                }
            }
            '\r' => col = 0,
            '\n' => {
                row += 1;
                col = 0;
            }
            c if !c.is_control() => {
                // The line is full: the terminal wraps to the next one.
                if col >= COLUMNS {
                    row += 1;
                    col = 0;
                    if rows.len() <= row {
                        rows.resize(row + 1, Vec::new());
                    }
                }
                let line = &mut rows[row];
                if line.len() <= col {
                    line.resize(col, ' ');
                    line.push(c);
                } else {
                    line[col] = c;
                }
                col += 1;
            }
            _ => {}
        }
        if rows.len() <= row {
            rows.resize(row + 1, Vec::new());
        }
    }
    rows.into_iter()
        .map(|r| r.into_iter().collect::<String>().trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn the_final_screen_replays_cursor_moves_and_erasures() {
    let drawn = "bar 1\nbar 2\r\u{1b}[1A\u{1b}[2Kdone\n\u{1b}[Jsummary\n";
    assert_eq!(final_screen(drawn), ["done", "summary"]);
}

/// The lines a terminal drew, colour and cursor codes removed: each redraw of a bar is a line.
fn screen_lines(screen: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut chars = screen.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequences end with a letter; a cursor move also ends a drawn line.
            for code in chars.by_ref() {
                if code.is_ascii_alphabetic() {
                    if matches!(code, 'A' | 'B' | 'K' | 'J') {
                        plain.push('\n');
                    }
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
        .split(['\r', '\n'])
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// `download TARGET` into a fresh sandbox under a pseudo-terminal; what the terminal received.
fn download_on_a_terminal(server: &civitai_dl_fake::FakeCivitai, target: &str) -> String {
    let sandbox = Sandbox::new();
    let args = [
        "--base-url".to_string(),
        server.api_url(),
        "download".into(),
        target.into(),
        "-o".into(),
        sandbox.out.display().to_string(),
    ];
    on_a_terminal(&sandbox, &args)
}

/// Every drawing of the total bar.
fn total_bars(screen: &str) -> Vec<String> {
    screen_lines(screen)
        .into_iter()
        .filter(|l| l.trim_start().starts_with("total"))
        .collect()
}

// Issue 11.3: the total bar counted files (0 % through a 120 MiB file) with no overall speed or
// ETA. It counts bytes, with this run's speed and an ETA over the known plan.
#[test]
fn the_total_bar_shows_bytes_speed_and_eta() {
    let m = model(1501, "Checkpoint", 8 * MIB);
    let server = serve(
        vec![m],
        Knobs {
            bandwidth: Some(4 * MIB),
            ..Knobs::default()
        },
    );
    let screen = download_on_a_terminal(&server, "1501");
    let total = total_bars(&screen)
        .into_iter()
        .find(|l| l.contains("MiB/s") && l.contains("eta"))
        .unwrap_or_else(|| panic!("no total bar with bytes, speed and ETA:\n{screen}"));
    assert!(total.contains("8.00 MiB"), "{total}");
}

// Issue 11.4: a typo'd target drew a junk `total [====] 0/0 files` bar above its error.
#[test]
fn an_early_error_draws_no_bar() {
    let server = serve(vec![model(1502, "LORA", 4096)], Knobs::default());
    let screen = download_on_a_terminal(&server, "not-a-target");
    assert!(screen.contains("not-a-target"), "{screen}");
    let bars = total_bars(&screen);
    assert!(bars.is_empty(), "no bar before work starts: {bars:?}");
}

/// `scan` on a terminal draws its own bar: bytes to hash, speed, ETA, files hashed.
#[test]
fn the_scan_bar_shows_bytes_speed_eta_and_files() {
    let sandbox = Sandbox::new();
    for i in 0..4 {
        std::fs::write(
            sandbox.out.join(format!("m{i}.ckpt")),
            vec![i as u8; 32 * MIB as usize],
        )
        .unwrap();
    }
    let args = [
        "scan".to_string(),
        "--no-remote".into(),
        "--index".into(),
        sandbox.root().join("index.sqlite").display().to_string(),
        sandbox.out.display().to_string(),
    ];
    let screen = on_a_terminal(&sandbox, &args);
    let bars: Vec<String> = screen_lines(&screen)
        .into_iter()
        .filter(|l| l.trim_start().starts_with("hashing"))
        .collect();
    assert!(!bars.is_empty(), "no scan bar:\n{screen}");
    for bar in &bars {
        assert!(
            bar.contains("/128.00 MiB") && bar.contains("/s eta") && bar.contains("/4 files"),
            "every drawing is over the bytes to hash: {bar}"
        );
    }
    let warm = on_a_terminal(&sandbox, &args);
    assert!(
        !screen_lines(&warm)
            .iter()
            .any(|l| l.trim_start().starts_with("hashing")),
        "a rescan with nothing to hash draws no bar:\n{warm}"
    );
}

// Issue 11.1: a long list planned in silence. On a terminal, a planning bar counts the targets.
#[test]
fn a_long_list_shows_a_planning_bar() {
    let (server, sandbox, list) = slow_list(1600);
    let args = [
        "--base-url".to_string(),
        server.api_url(),
        "download".into(),
        "--from-file".into(),
        list.display().to_string(),
        "--dry-run".into(),
        "-o".into(),
        sandbox.out.display().to_string(),
    ];
    let screen = on_a_terminal(&sandbox, &args);
    let planning: Vec<String> = screen_lines(&screen)
        .into_iter()
        .filter(|l| l.trim_start().starts_with("planning"))
        .collect();
    assert!(
        planning.iter().any(|l| l.ends_with("/120 targets")),
        "no planning bar:\n{screen}"
    );
    assert!(
        final_screen(&screen)
            .iter()
            .all(|l| !l.starts_with("planning")),
        "the planning bar is cleared: {:?}",
        final_screen(&screen)
    );
}

// Issue 11.4: after Ctrl-C the file bar stayed on screen, frozen, above the summary.
#[test]
fn ctrl_c_leaves_no_bar_on_the_screen() {
    let m = model(1503, "Checkpoint", 64 * MIB);
    let part = format!("{}.part", first_file(&m).name);
    let server = serve(
        vec![m],
        Knobs {
            bandwidth: Some(2 * MIB),
            ..Knobs::default()
        },
    );
    let sandbox = Sandbox::new();
    let args = [
        "--base-url".to_string(),
        server.api_url(),
        "download".into(),
        "1503".into(),
        "-o".into(),
        sandbox.out.display().to_string(),
    ];
    let mut script = terminal_command(&sandbox, &args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run script(1)");
    let part = sandbox.out.join(part);
    assert!(
        poll_until(Duration::from_secs(30), || len_or_zero(&part) > 2 * MIB),
        "the download did not start"
    );
    let pid = civitai_dl_writing_to(&sandbox.out).expect("the civitai-dl process");
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let mut raw = Vec::new();
    script
        .stdout
        .take()
        .expect("piped")
        .read_to_end(&mut raw)
        .expect("read the terminal");
    script.wait().expect("script ends");
    let screen = String::from_utf8_lossy(&raw);
    let last = final_screen(&screen);
    assert!(
        last.iter()
            .any(|l| l.contains("interrupted: progress saved")),
        "{last:?}\n{screen}"
    );
    assert!(
        last.iter()
            .all(|l| !l.contains(" eta ") && !l.trim_start().starts_with("total")),
        "a bar is left on the screen: {last:?}"
    );
}

/// The pid of the civitai-dl process whose command line names `out` (the test's own run).
fn civitai_dl_writing_to(out: &std::path::Path) -> Option<u32> {
    let wanted = out.display().to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_ours = args.first()?.ends_with("civitai-dl") && args.contains(&wanted);
            is_ours.then_some(pid)
        })
}
