//! How commands fail, and the exit code each failure gives.

use crate::output::{errln, outln};

/// A command's failure.
#[derive(Debug)]
pub enum CliError {
    /// The evidence was read and checked, and it is not acceptable: exit 1.
    Rejected {
        /// Stable machine-readable reason.
        reason: &'static str,
        /// One line for a human.
        message: String,
        /// Print as JSON on stdout instead of text on stderr.
        json: bool,
    },
    /// The Trust Server answered, and refused or found nothing: exit 1.
    Server {
        /// HTTP status.
        status: u16,
        /// The server's stable reason (`unauthorized`, `not_found`, ...).
        reason: String,
        /// The server's sentence.
        message: String,
        /// What the operator may check, when there is something to say.
        hint: Option<String>,
        /// Print the error body as JSON on stdout instead of text on stderr.
        json: bool,
    },
    /// Bad arguments, unreadable input, or no usable connection to a server: exit 2.
    Usage(String),
}

impl CliError {
    /// Exit status for the process.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Rejected { .. } | Self::Server { .. } => 1,
            Self::Usage(_) => 2,
        }
    }

    /// Prints the error where its reader expects it.
    pub fn report(&self) {
        match self {
            Self::Rejected {
                reason,
                message,
                json: true,
            } => {
                let v = serde_json::json!({"valid": false, "reason": reason, "error": message});
                outln!("{v}");
            }
            Self::Rejected {
                reason,
                message,
                json: false,
            } => {
                errln!("rejected ({reason}): {message}");
            }
            Self::Server {
                status,
                reason,
                message,
                json: true,
                ..
            } => {
                let v = serde_json::json!({"error": message, "reason": reason, "status": status});
                outln!("{v}");
            }
            Self::Server {
                status,
                reason,
                message,
                hint,
                json: false,
            } => {
                errln!("nodetrust: the server answered HTTP {status} ({reason}): {message}");
                if let Some(h) = hint {
                    errln!("nodetrust: {h}");
                }
            }
            Self::Usage(m) => errln!("nodetrust: {m}"),
        }
    }
}
