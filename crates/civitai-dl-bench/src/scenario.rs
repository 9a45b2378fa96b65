//! The scenarios: what each one serves (catalogue, faults, bandwidth, latency) and which flags the
//! sequential and the experimental side get.

use super::*;

/// The opt-in endurance scenario (not in the default set).
pub(crate) const SOAK: &str = "soak";

/// Scenario names in the default order (cheap ones first, so a failure shows early).
pub(crate) const DEFAULT_SCENARIOS: [&str; 7] = [
    "clean-fast",
    "api-latency",
    "api-latency-8",
    "flaky",
    "rate-limit",
    "big-files",
    "big-file-segmented",
];

/// How the files of a scenario misbehave.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Faults {
    /// Clean storage.
    None,
    /// Resets, a stall, corrupted and HTML first attempts.
    Flaky,
}

/// One workload and the flags of its two configurations.
#[derive(Clone, Debug)]
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) models: usize,
    pub(crate) file_size: u64,
    pub(crate) knobs: Knobs,
    pub(crate) faults: Faults,
    pub(crate) rate_limit: f64,
    /// Flags of both runs, after the global options.
    pub(crate) common: Vec<&'static str>,
    /// Flags of the experimental run only (after `download`).
    pub(crate) experimental: Vec<&'static str>,
}

pub(crate) fn selected_scenarios(requested: &[String]) -> Result<Vec<&'static str>, BenchError> {
    if requested.is_empty() {
        return Ok(DEFAULT_SCENARIOS.to_vec());
    }
    requested
        .iter()
        .map(|name| {
            DEFAULT_SCENARIOS
                .iter()
                .chain(std::iter::once(&SOAK))
                .find(|known| **known == name.as_str())
                .copied()
                .ok_or_else(|| unknown_scenario(name.clone()))
        })
        .collect()
}

pub(crate) fn unknown_scenario(name: String) -> BenchError {
    BenchError::UnknownScenario {
        name,
        known: format!("{}, {SOAK}", DEFAULT_SCENARIOS.join(", ")),
    }
}

pub(crate) fn scaled_count(count: usize, scale: f64) -> usize {
    ((count as f64 * scale).round() as usize).max(1)
}

pub(crate) fn scaled_size(bytes: u64, scale: f64) -> u64 {
    ((bytes as f64 * scale) as u64).max(MIN_FILE_BYTES)
}

pub(crate) const EXPERIMENTAL: &str = "--enable-experimental-performance";

/// The named scenario at `scale`.
pub(crate) fn scenario(name: &str, scale: f64) -> Option<Scenario> {
    let base = |name, models, file_size| Scenario {
        name,
        models: scaled_count(models, scale),
        file_size: scaled_size(file_size, scale),
        knobs: Knobs::default(),
        faults: Faults::None,
        rate_limit: UNBINDING_RATE,
        common: Vec::new(),
        experimental: vec![EXPERIMENTAL],
    };
    let api_latency = Knobs {
        api_latency: Duration::from_millis(100),
        ..Knobs::default()
    };
    let capped = Knobs {
        bandwidth: Some(BIG_FILE_BANDWIDTH),
        ..Knobs::default()
    };
    let wide = vec![
        EXPERIMENTAL,
        "--max-concurrent-api",
        "8",
        "--max-concurrent-downloads",
        "8",
    ];
    Some(match name {
        "api-latency" => Scenario {
            knobs: api_latency,
            ..base("api-latency", 100, 256 * 1024)
        },
        "api-latency-8" => Scenario {
            knobs: api_latency,
            experimental: wide,
            ..base("api-latency-8", 100, 256 * 1024)
        },
        "big-files" => Scenario {
            knobs: capped,
            experimental: vec![
                EXPERIMENTAL,
                "--max-concurrent-downloads",
                "4",
                "--segments",
                "1",
            ],
            ..base("big-files", 4, 200 * MIB)
        },
        "big-file-segmented" => Scenario {
            knobs: capped,
            experimental: vec![EXPERIMENTAL, "--segments", "4"],
            ..base("big-file-segmented", 1, 200 * MIB)
        },
        "flaky" => Scenario {
            knobs: Knobs {
                api_503_first: 2,
                api_429_first: 2,
                retry_after_secs: 1,
                ..Knobs::default()
            },
            faults: Faults::Flaky,
            common: vec!["--read-timeout", STALL_READ_TIMEOUT_SECS],
            ..base("flaky", 12, 4 * MIB)
        },
        "clean-fast" => base("clean-fast", 4, 100 * MIB),
        "rate-limit" => Scenario {
            rate_limit: SCENARIO_RATE_LIMIT,
            experimental: wide,
            ..base("rate-limit", 100, 64 * 1024)
        },
        _ => return None,
    })
}

impl Scenario {
    /// The catalogue served to each run: uniform models, with the scenario's faults.
    pub(crate) fn catalog(&self) -> Catalog {
        let mut catalog = Catalog::uniform(self.models, self.file_size);
        if self.faults == Faults::Flaky {
            for (index, model) in catalog.models.iter_mut().enumerate() {
                for file in model.versions.iter_mut().flat_map(|v| v.files.iter_mut()) {
                    file.faults = flaky_faults(index, file.size);
                }
            }
        }
        catalog
    }
}

/// The model ids of a catalogue, as command-line targets.
pub(crate) fn model_ids(catalog: &Catalog) -> Vec<String> {
    catalog.models.iter().map(|m| m.id.to_string()).collect()
}

/// The flaky scenario's faults by model position: one stall, then resets, corrupted and HTML
/// first attempts in turn, and some clean files.
pub(crate) fn flaky_faults(index: usize, size: u64) -> FileFaults {
    match index % 5 {
        _ if index == 1 => FileFaults {
            stall_after: Some((size / 2, 1)),
            ..FileFaults::default()
        },
        0 => FileFaults {
            reset_after: Some((size / 3, 1)),
            ..FileFaults::default()
        },
        2 => FileFaults {
            corrupt_attempts: 1,
            ..FileFaults::default()
        },
        3 => FileFaults {
            html_attempts: 1,
            ..FileFaults::default()
        },
        _ => FileFaults::default(),
    }
}
