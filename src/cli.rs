//! The command line, as clap derive types. No logic lives here: [`crate::config`] merges these
//! values with the environment and the config file, and [`crate::app`] runs the commands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use civitai_dl_engine::plan::naming::Layout;
use civitai_dl_engine::sidecar::SidecarKind;

use crate::settings::limits;

/// Download models, preview images and metadata from Civitai: resumable, verified, polite.
#[derive(Debug, Parser)]
#[command(name = "civitai-dl", version, about, long_about = None)]
pub struct Cli {
    /// Options shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted by every command (also from the environment and the config file).
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Civitai API key (also read from CIVITAI_TOKEN or CIVITAI_API_TOKEN). Sent only to the API host.
    #[arg(long, global = true, env = "CIVITAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Civitai base URL [default: https://civitai.com].
    #[arg(long, global = true, env = "CIVITAI_BASE_URL", value_name = "URL")]
    pub base_url: Option<String>,

    /// Another host serving the same API (e.g. https://civitai.red), tried in order when the
    /// primary keeps failing with connection errors or 5xx. Repeatable.
    #[arg(long = "fallback-base-url", global = true, value_name = "URL")]
    pub fallback_base_urls: Vec<String>,

    /// Config file [default: civitai-dl/config.toml in the user's config directory, if
    /// present].
    #[arg(long, global = true, env = "CIVITAI_DL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// More log output: -v adds a line per request (method, host, path, status, bytes, time;
    /// never the key or a signed URL's query), -vv debug detail and the headers behind retries,
    /// -vvv everything.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors and the final result.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// No progress bars (they are also off when stderr is not a terminal).
    #[arg(long, global = true)]
    pub no_progress: bool,

    /// Without bars (stderr not a terminal, or --no-progress), a progress line for each file
    /// still transferring, this often (0 = none; the "downloaded …" line comes either way).
    #[arg(long, global = true, value_name = "SECS", default_value_t = 10,
          value_parser = limits::PROGRESS_INTERVAL.parser::<u64>())]
    pub progress_interval: u64,

    /// Print a machine-readable JSON summary on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// Requests per second to Civitai (API calls and download resolves) [default: 5].
    #[arg(long, global = true, value_name = "PER_SEC", value_parser = limits::RATE_LIMIT.parser::<f64>())]
    pub rate_limit: Option<f64>,

    /// How many requests may go back to back after an idle spell [default: 1].
    #[arg(long, global = true, value_name = "N", value_parser = limits::RATE_BURST.parser::<u32>())]
    pub rate_burst: Option<u32>,

    /// Waits before each retry, in milliseconds, comma-separated [default: 5000,15000,30000,60000].
    #[arg(long, global = true, value_name = "MS,MS,...", value_delimiter = ',')]
    pub retry_delays_ms: Option<Vec<u64>>,

    /// Seconds to wait for a connection [default: 10].
    #[arg(long, global = true, value_name = "SECS", value_parser = limits::CONNECT_TIMEOUT.parser::<u64>())]
    pub connect_timeout: Option<u64>,

    /// Seconds of silence after which a transfer is considered stalled [default: 300].
    #[arg(long, global = true, value_name = "SECS", value_parser = limits::READ_TIMEOUT.parser::<u64>())]
    pub read_timeout: Option<u64>,
}

/// The commands.
#[derive(Debug, Subcommand)]
// Parsed once per run. Without the dev-tools commands, which are as big, `Info` stands out.
#[cfg_attr(not(feature = "dev-tools"), allow(clippy::large_enum_variant))]
pub enum Command {
    /// Download models (by id, URL, AIR, version, creator or list file).
    #[command(after_help = DOWNLOAD_EXAMPLES)]
    Download(Box<DownloadArgs>),
    /// Show what would be downloaded: versions, files, sizes, hashes.
    #[command(after_help = INFO_EXAMPLES)]
    Info(InfoArgs),
    /// Hash the model files under folders (cached), identify them on Civitai and list them.
    #[command(after_help = SCAN_EXAMPLES)]
    Scan(ScanArgs),
    /// Check model files against the hashes their .civitai.info sidecars or Civitai publish.
    #[command(after_help = VERIFY_EXAMPLES)]
    Verify(VerifyArgs),
    /// Say what a model file (or hash) is on Civitai, and the command that downloads it.
    #[command(after_help = IDENTIFY_EXAMPLES)]
    Identify(IdentifyArgs),
    /// Print shell completions (e.g. `civitai-dl completions bash > ~/.local/share/bash-completion/completions/civitai-dl`).
    Completions(CompletionsArgs),
    /// Print the man page (e.g. `civitai-dl man > ~/.local/share/man/man1/civitai-dl.1`).
    Man,
    /// Run an offline fake Civitai on 127.0.0.1 (for trying things out and for tests).
    #[cfg(feature = "dev-tools")]
    FakeServer(FakeServerArgs),
    /// Start the fake server and download from it with the real download path.
    #[cfg(feature = "dev-tools")]
    Demo(DemoArgs),
    /// Measure sequential against experimental downloads on the fake server (or A/B on a list).
    #[cfg(feature = "dev-tools")]
    Bench(BenchArgs),
}

/// Shown at the end of `download --help`, as uv and cargo do.
const DOWNLOAD_EXAMPLES: &str = "\
Examples:
  civitai-dl download 4201 -o models                         # a model's newest version, primary file
  civitai-dl download https://civitai.com/models/4201?modelVersionId=130072
  civitai-dl download 4201 --format SafeTensor --fp fp16 --layout comfyui -o ~/ComfyUI
  civitai-dl download --user someone -o models               # every model of a creator
  civitai-dl download --from-file list.txt --images 2        # one target per line, with previews
  civitai-dl download 4201 --dry-run                         # what would be fetched, and where
  civitai-dl download 4201 --all-files --layout forge --root ~/Forge   # the checkpoint and its VAE
  civitai-dl download 4201 --sidecars civitai-info,a1111-json,lm-metadata --images 1";

/// Shown at the end of `info --help`.
const INFO_EXAMPLES: &str = "\
Examples:
  civitai-dl info 4201                                       # versions, files, sizes, hashes
  civitai-dl info 4201 --all-versions --all-files --json     # everything, machine-readable
  civitai-dl info --from-file list.txt -o ~/ComfyUI --layout comfyui   # where each file would go";

/// Shown at the end of `scan --help`.
const SCAN_EXAMPLES: &str = "\
Examples:
  civitai-dl scan ~/ComfyUI/models                           # hash (cached), identify on Civitai, list
  civitai-dl scan ~/sd/models --write-sidecars civitai-info,a1111-json,lm-metadata,preview
  civitai-dl scan --comfy-yaml ~/ComfyUI/extra_model_paths.yaml --no-remote   # offline: hashes only
  civitai-dl scan ~/sd/models --hash-jobs 2 --json           # two files at once (SSDs); NDJSON events

SHA-256s go to Civitai 100 per request; a file still unknown is looked up by its AutoV3 (finds
files whose header a tool rewrote). A failed lookup (429, 5xx, maintenance) leaves a file pending
for the next scan; matched and unmatched files are not asked again (--retry-unmatched asks again).";

/// Shown at the end of `verify --help`.
const VERIFY_EXAMPLES: &str = "\
Examples:
  civitai-dl verify ~/ComfyUI/models/loras                   # re-hash and compare with each .civitai.info
  civitai-dl verify --cached ~/sd/models                     # trust hashes cached by scan where files are unchanged
  civitai-dl verify --quarantine ~/sd/models                 # move mismatches to <folder>/.civitai-dl/quarantine/

Verdicts: ok, ok-tensor (header edited, weights intact), mismatch, no-published-hash, unknown (no
sidecar), missing. The expected hash comes from the .civitai.info, else (for a file scan identified)
from Civitai, unless --no-remote. Exit 0 only when every file is ok or ok-tensor.";

/// Shown at the end of `identify --help`.
const IDENTIFY_EXAMPLES: &str = "\
Examples:
  civitai-dl identify some.safetensors                       # hashed once (the scan cache is used)
  civitai-dl identify 3A5B0C1D2E3F                           # any hash kind: SHA256, AutoV2, AutoV3
  civitai-dl identify --json a.safetensors b.ckpt

Exit 1 when something was not found on Civitai.";

/// The hash cache the library commands read and fill.
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// The hash index (default: $XDG_CACHE_HOME/civitai-dl/index.sqlite, else
    /// ~/.cache/civitai-dl/index.sqlite).
    #[arg(long, value_name = "PATH")]
    pub index: Option<PathBuf>,
}

/// `civitai-dl scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Folders (or single model files) to scan.
    #[arg(value_name = "ROOT")]
    pub roots: Vec<PathBuf>,

    /// Also scan the model folders named in ComfyUI's extra_model_paths.yaml. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub comfy_yaml: Vec<PathBuf>,

    /// The hash cache.
    #[command(flatten)]
    pub index: IndexArgs,

    /// Files hashed at once overall. Without it: one per device (disk), so several disks are
    /// read in parallel and a spinning disk never seeks between two files.
    #[arg(long, value_name = "N", value_parser = limits::HASH_JOBS.parser::<usize>())]
    pub hash_jobs: Option<usize>,

    /// Do not ask Civitai what the files are: hash and list only (no config or network needed).
    #[arg(long)]
    pub no_remote: bool,

    /// Ask Civitai again about files it did not know last time (they are skipped otherwise).
    #[arg(long, conflicts_with = "no_remote")]
    pub retry_unmatched: bool,

    /// Beside each identified file, write these sidecars where they are missing (an existing
    /// one is never touched).
    #[arg(
        long,
        value_enum,
        value_name = "KIND,...",
        value_delimiter = ',',
        conflicts_with = "no_remote"
    )]
    pub write_sidecars: Vec<ScanSidecar>,
}

/// What `scan --write-sidecars` can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScanSidecar {
    /// `<stem>.civitai.info` (Civitai Helper, SwarmUI).
    CivitaiInfo,
    /// `<stem>.json`, the A1111 / Forge card.
    A1111Json,
    /// `<stem>.metadata.json` (ComfyUI-Lora-Manager).
    LmMetadata,
    /// `<stem>.preview.<ext>`: the version's first image, named by its bytes' format.
    Preview,
}

impl ScanSidecar {
    /// The metadata format, for all but the preview.
    pub fn format(self) -> Option<SidecarKind> {
        match self {
            ScanSidecar::CivitaiInfo => Some(SidecarKind::CivitaiInfo),
            ScanSidecar::A1111Json => Some(SidecarKind::A1111Json),
            ScanSidecar::LmMetadata => Some(SidecarKind::LmMetadata),
            ScanSidecar::Preview => None,
        }
    }
}

/// `civitai-dl identify`.
#[derive(Debug, Args)]
pub struct IdentifyArgs {
    /// Model files, or hashes (SHA256, AutoV2, AutoV3, BLAKE3).
    #[arg(value_name = "FILE|HASH", required = true)]
    pub items: Vec<String>,

    /// The hash cache (a file hashed before is not read again).
    #[command(flatten)]
    pub index: IndexArgs,
}

/// `civitai-dl verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Model files or folders to check.
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,

    /// Trust the cached hash of a file unchanged since it was hashed, instead of reading it
    /// again.
    #[arg(long)]
    pub cached: bool,

    /// Move mismatching files to <folder>/.civitai-dl/quarantine/<relative path> (never deletes,
    /// never overwrites).
    #[arg(long)]
    pub quarantine: bool,

    /// Judge by sidecars only: never ask Civitai for a published hash.
    #[arg(long)]
    pub no_remote: bool,

    /// The hash cache.
    #[command(flatten)]
    pub index: IndexArgs,
}

/// `civitai-dl completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Which targets to work on.
#[derive(Debug, Args)]
#[command(next_help_heading = "Targets")]
pub struct TargetArgs {
    /// Model ids, civitai.com / civitai.red URLs, or AIR URNs.
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,

    /// A model version id. Repeatable.
    #[arg(long = "version", value_name = "VERSION_ID")]
    pub versions: Vec<u64>,

    /// Every model of this creator. Repeatable.
    #[arg(long = "user", value_name = "USERNAME")]
    pub users: Vec<String>,

    /// A file with one target per line (# starts a comment); `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,
}

/// Which versions and files of a model to take.
#[derive(Debug, Args)]
#[command(next_help_heading = "Selection")]
pub struct SelectionArgs {
    /// Every version, not just the latest.
    #[arg(long)]
    pub all_versions: bool,

    /// Every file of a version, not just the primary one.
    #[arg(long)]
    pub all_files: bool,

    /// Only files of this type (Model, "Pruned Model", VAE, Config, "Training Data", …). Repeatable.
    #[arg(long = "file-type", value_name = "TYPE")]
    pub file_types: Vec<String>,

    /// Only files in this format (SafeTensor, PickleTensor, GGUF, …).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,

    /// Only files with this precision (fp16, fp32, bf16, fp8, …).
    #[arg(long, value_name = "FP")]
    pub fp: Option<String>,

    /// Only pruned or full files.
    #[arg(long, value_name = "pruned|full", ignore_case = true,
          value_parser = clap::builder::PossibleValuesParser::new(["pruned", "full"]))]
    pub size: Option<String>,

    /// Only GGUF files with this quantisation (Q4_K_M, Q8_0, …).
    #[arg(long, value_name = "QUANT")]
    pub quant_type: Option<String>,

    /// Also fetch up to N preview images of each chosen version [default: 0].
    #[arg(long, value_name = "N", value_parser = limits::IMAGES.parser::<usize>())]
    pub images: Option<usize>,

    /// Listings (--user) show only SFW models, as the API does by default. Without this flag
    /// civitai-dl asks for everything, so no model is dropped silently.
    #[arg(long)]
    pub sfw_only: bool,
}

/// `civitai-dl download`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// What to download.
    #[command(flatten)]
    pub targets: TargetArgs,

    /// Which versions and files.
    #[command(flatten)]
    pub selection: SelectionArgs,

    /// Where files go.
    #[command(flatten)]
    pub placement: PlacementArgs,

    /// No metadata sidecars at all (no <stem>.civitai.info, .json or .metadata.json).
    #[arg(long, conflicts_with = "sidecars")]
    pub no_metadata: bool,

    /// Sidecars to write beside each model file, comma-separated [default: civitai-info].
    #[arg(long, value_enum, value_delimiter = ',', value_name = "KINDS")]
    pub sidecars: Vec<SidecarKind>,

    /// Plan only: show what would be downloaded, touch nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// State file [default: <output>/.civitai-dl/state.json].
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,

    /// Keep a file whose SHA-256 differs from Civitai's after two identical downloads (the
    /// published hash is then likely wrong).
    #[arg(long)]
    pub accept_hash_mismatch: bool,

    /// Abort (and resume) an attempt whose speed stays below this many bytes per second over the
    /// window [default: 1024; 0 = off].
    #[arg(long, value_name = "BYTES_PER_SEC")]
    pub min_speed: Option<u64>,

    /// The window for --min-speed, in seconds [default: 60].
    #[arg(long, value_name = "SECS", value_parser = limits::MIN_SPEED_WINDOW.parser::<u64>())]
    pub min_speed_window: Option<u64>,

    /// Opt-in concurrency.
    #[command(flatten)]
    pub performance: PerformanceArgs,

    /// Performance monitor and metrics file.
    #[command(flatten)]
    pub monitor: MonitorArgs,
}

/// The performance monitor, the metrics file and the throughput baseline for alerts.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Monitoring")]
pub struct MonitorArgs {
    /// Log one line per interval: throughput, active downloads, queue, error and timeout rates,
    /// memory.
    #[arg(long)]
    pub monitor_performance: bool,

    /// Seconds between monitor lines and alert checks [default: 60].
    #[arg(long, value_name = "SECS", value_parser = limits::REPORT_INTERVAL.parser::<u64>())]
    pub report_interval: Option<u64>,

    /// Write every figure of the run to this JSON file at the end (and at each monitor line).
    #[arg(long, value_name = "FILE")]
    pub metrics_json: Option<PathBuf>,

    /// Expected throughput in MB/s: alert when the run falls more than [monitor]
    /// alert_throughput_drop (10 %) below it.
    #[arg(long, value_name = "MBPS")]
    pub baseline_throughput: Option<f64>,
}

/// Opt-in concurrency; ordinary runs stay sequential.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Performance (experimental)")]
pub struct PerformanceArgs {
    /// Turn on the experimental pieces enabled in the config file (all by default): parallel API
    /// calls, parallel previews, parallel downloads, segmented downloads, adaptive rate.
    #[arg(long)]
    pub enable_experimental_performance: bool,

    /// Turn on only these pieces: parallel_api, parallel_images, parallel_download, segmented,
    /// adaptive_rate (comma-separated).
    #[arg(long, value_name = "PIECES", value_delimiter = ',')]
    pub experimental: Vec<String>,

    /// One task, one request at a time, whatever else is set (the escape hatch).
    #[arg(long)]
    pub force_sync_mode: bool,

    /// Requests to the API host in flight at once, metadata and download resolves alike
    /// (experimental) [default: 2].
    #[arg(long, value_name = "N", value_parser = limits::MAX_API.parser::<usize>())]
    pub max_concurrent_api: Option<usize>,

    /// Model files downloading at once (experimental) [default: 2].
    #[arg(long, value_name = "N", value_parser = limits::MAX_DOWNLOADS.parser::<usize>())]
    pub max_concurrent_downloads: Option<usize>,

    /// Preview images downloading at once (experimental) [default: 2].
    #[arg(long, value_name = "N", value_parser = limits::MAX_IMAGES.parser::<usize>())]
    pub max_concurrent_images: Option<usize>,

    /// Connections per large file (experimental) [default: 4].
    #[arg(long, value_name = "N", value_parser = limits::SEGMENTS.parser::<usize>())]
    pub segments: Option<usize>,

    /// Stop starting new work when this file appears [default: EMERGENCY_STOP in the working
    /// directory or the output directory].
    #[arg(long, value_name = "PATH")]
    pub emergency_stop_file: Option<PathBuf>,
}

/// `civitai-dl info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// What to describe.
    #[command(flatten)]
    pub targets: TargetArgs,

    /// Which versions and files.
    #[command(flatten)]
    pub selection: SelectionArgs,

    /// Where the files would go (the paths shown).
    #[command(flatten)]
    pub placement: PlacementArgs,
}

/// The output folder and the layout under it, for `download` and for what `info` shows.
#[derive(Debug, Args)]
pub struct PlacementArgs {
    /// Output directory, the app's folder with a layout [default: the config file's `output`,
    /// else the current directory]. --root is the same option: `--layout forge --root ~/Forge`.
    #[arg(short, long, visible_alias = "root", value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Where each file goes: flat, or the folders A1111, Forge, ComfyUI or SwarmUI read for its
    /// type (a checkpoint's VAE or text encoder to its own folder); invoke: <type>/<base model>/
    /// for InvokeAI to register in place [default: flat, or the config file's `layout`].
    #[arg(long, value_enum)]
    pub layout: Option<Layout>,
}

impl PlacementArgs {
    /// The output folder and layout: these flags over the settings.
    pub fn resolve(&self, settings: &crate::settings::Settings) -> (PathBuf, Layout) {
        (
            self.output
                .clone()
                .unwrap_or_else(|| settings.output.clone()),
            self.layout.unwrap_or(settings.layout),
        )
    }
}

/// `civitai-dl fake-server`.
#[cfg(feature = "dev-tools")]
#[derive(Debug, Args)]
pub struct FakeServerArgs {
    /// Serve this many uniform small models instead of the demo catalogue.
    #[arg(long, value_name = "N")]
    pub uniform: Option<usize>,

    /// Size in bytes of each uniform model's file.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub file_size: u64,

    /// Per-connection bandwidth cap of the storage host, in bytes per second.
    #[arg(long, value_name = "BYTES_PER_SEC")]
    pub bandwidth: Option<u64>,

    /// Added latency of every API answer, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub api_latency_ms: u64,

    /// Added latency of every storage file answer, in milliseconds (a far CDN's round trip).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub storage_latency_ms: u64,
}

/// `civitai-dl demo`.
#[cfg(feature = "dev-tools")]
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to put the downloads [default: a fresh temporary folder, printed].
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Opt-in concurrency, to try it against the fake server.
    #[command(flatten)]
    pub performance: PerformanceArgs,

    /// Performance monitor and metrics file.
    #[command(flatten)]
    pub monitor: MonitorArgs,
}

/// `civitai-dl bench`.
#[cfg(feature = "dev-tools")]
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A scenario to run, repeatable [default: all but soak]: clean-fast, api-latency,
    /// api-latency-8, flaky, rate-limit, big-files, big-file-segmented, soak.
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<String>,

    /// Sequential/experimental pairs per scenario, alternating A B A B.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub rounds: usize,

    /// Multiplies file sizes and counts (e.g. 0.05 for a quick run in CI).
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub scale: f64,

    /// Save the results as JSON (global --json prints them on stdout instead).
    #[arg(long, value_name = "FILE")]
    pub json_file: Option<PathBuf>,

    /// A saved result to compare with: exit non-zero when a speed-up fell by more than
    /// --threshold.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,

    /// Largest tolerated relative fall of a speed-up against --baseline.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.10)]
    pub threshold: f64,

    /// Draw the speed-ups as an SVG bar chart.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// A/B test on a real target list (same format as --from-file): a random half downloads
    /// sequentially, the other experimentally, against --base-url with the usual key and config.
    #[arg(long, value_name = "FILE")]
    pub ab: Option<PathBuf>,

    /// Seed of the A/B split and of the soak's faults.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,

    /// How long the soak scenario runs, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub duration: u64,

    /// Seconds between the soak's report lines.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub report_interval: u64,
}
