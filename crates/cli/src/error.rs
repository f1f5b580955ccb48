//! What a command can fail with, and the exit code each failure maps to.

use courier_wire::Problem;

/// Exit codes, the contract scripts rely on (README's table repeats it).
pub mod exit {
    /// The command did what it was asked.
    pub const OK: u8 = 0;
    /// The command ran, and what it reports is a failure: the watched job ended `dead`
    /// or `cancelled`, or an import refused some of its lines.
    pub const FAILED: u8 = 1;
    /// Bad usage or local input: unknown flags, a malformed value, an unreadable input
    /// file, an import journal that cannot be written.
    pub const USAGE: u8 = 2;
    /// The API refused the request, or could not be reached.
    pub const API: u8 = 3;
    /// Interrupted with Ctrl-C (128 + SIGINT, as shells report it).
    pub const INTERRUPTED: u8 = 130;
}

/// Every way a command fails.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Input the CLI itself refuses (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The API answered with an error: its problem document when it sent one.
    #[error("{}", describe_api(*.status, .problem.as_deref(), .body))]
    Api {
        status: u16,
        problem: Option<Box<Problem>>,
        /// The start of the body, when it was not a problem document.
        body: String,
    },
    /// No answer: connection refused, timeout, TLS failure, a cut connection.
    #[error("cannot reach the API at {base}: {reason}")]
    Connection { base: String, reason: String },
    /// The API answered 2xx with something the CLI cannot read.
    #[error("unexpected answer from {what}: {reason}")]
    Unexpected { what: String, reason: String },
    /// Writing the output failed (other than a closed pipe, which ends quietly).
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
    /// Reading or writing a local file other than the input (an import's journal).
    #[error("{0}")]
    Local(String),
    /// Ctrl-C: the command stopped at a safe point.
    #[error("interrupted")]
    Interrupted,
}

fn describe_api(status: u16, problem: Option<&Problem>, body: &str) -> String {
    match problem {
        Some(p) => {
            let mut text = format!("{} ({}): {}", p.title, p.status, p.detail);
            for e in &p.errors {
                if e.field.is_empty() {
                    text.push_str(&format!("\n  {}", e.message));
                } else {
                    text.push_str(&format!("\n  {}: {}", e.field, e.message));
                }
            }
            text
        }
        None if body.is_empty() => format!("the API answered HTTP {status}"),
        None => format!("the API answered HTTP {status}: {body}"),
    }
}

impl CliError {
    /// The process's exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Local(_) => exit::USAGE,
            Self::Api { .. } | Self::Connection { .. } | Self::Unexpected { .. } => exit::API,
            Self::Output(_) => exit::API,
            Self::Interrupted => exit::INTERRUPTED,
        }
    }

    /// The HTTP status of an API refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Output errors on a closed pipe (`courier list | head`) are no error at all.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        Self::Output(e)
    }
}
