//! How commands fail, and the exit code each failure gives.

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
    /// Bad arguments or unreadable input: exit 2.
    Usage(String),
}

impl CliError {
    /// Exit status for the process.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Rejected { .. } => 1,
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
                println!("{v}");
            }
            Self::Rejected {
                reason,
                message,
                json: false,
            } => {
                eprintln!("rejected ({reason}): {message}");
            }
            Self::Usage(m) => eprintln!("nodetrust: {m}"),
        }
    }
}
