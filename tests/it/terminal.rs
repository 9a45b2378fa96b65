//! What a terminal shows, captured through a pseudo-terminal (`script` from util-linux): the bars
//! are drawn only when stderr is a terminal, so only a pty can see them.

use std::process::Command;

use civitai_dl_fake::Knobs;

use crate::support::{Sandbox, model, serve};

const MIB: u64 = 1024 * 1024;

/// Runs civitai-dl with `args` under a pseudo-terminal; what the terminal received.
fn on_a_terminal(sandbox: &Sandbox, args: &[String]) -> String {
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
    let output = script
        .args(["-qfec", &quoted.join(" "), "/dev/null"])
        .env("HOME", &sandbox.home)
        .env("XDG_CONFIG_HOME", &sandbox.home)
        .env("COLUMNS", "160")
        .current_dir(&sandbox.home)
        .output()
        .expect("run script(1)");
    String::from_utf8_lossy(&output.stdout).into_owned()
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
