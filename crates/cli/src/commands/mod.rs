//! One module per command (the import has its own, larger module).

pub mod jobs;
pub mod queues;
pub mod schedules;
pub mod submit;
pub mod watch;

use crate::client::Api;

/// What every command gets: the API client and the output mode.
pub struct Context {
    pub api: Api,
    /// `--json`: print the API's JSON instead of text.
    pub json: bool,
}
