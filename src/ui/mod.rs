//! What people see: progress bars that follow the run as one of its subscribers, log lines that
//! keep the bars intact, and the final summary. The only place that knows indicatif.

pub mod library;
pub mod logging;
pub mod output;
pub mod progress;
pub mod summary;
