//! The case count of the property tests (the `props` modules beside the parsers).
//!
//! Each property names its own default, small enough that the whole property suite stays within
//! seconds of a debug `cargo test` on two cores. proptest reads `PROPTEST_CASES` only into
//! `ProptestConfig::default()`, and a count set in code overrides it, so the default here applies
//! only while the variable is unset: `PROPTEST_CASES=100000 cargo test -p civitai-dl-engine props`
//! is the long run.

use proptest::test_runner::Config;

/// `cases` per property, unless `PROPTEST_CASES` says otherwise.
pub(crate) fn cases(cases: u32) -> Config {
    let default = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_some() {
        default
    } else {
        Config { cases, ..default }
    }
}
