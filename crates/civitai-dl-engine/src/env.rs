//! Every environment variable civitai-dl reads, in one list: a child run (the bench) or a test must
//! clear them all, so a developer's own key, host or config file cannot leak into it.

/// Names other Civitai tools use for the API key, read after `CIVITAI_API_KEY`.
pub const EXTRA_KEY_VARS: [&str; 2] = ["CIVITAI_TOKEN", "CIVITAI_API_TOKEN"];

/// All of them.
pub const ENV_VARS: [&str; 5] = [
    "CIVITAI_API_KEY",
    EXTRA_KEY_VARS[0],
    EXTRA_KEY_VARS[1],
    "CIVITAI_BASE_URL",
    "CIVITAI_DL_CONFIG",
];
