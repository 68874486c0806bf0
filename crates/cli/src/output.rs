//! Where every command writes: stdout through [`outln!`], stderr through [`errln!`].
//!
//! A closed stdout (`nodetrust ... | head -1`) ends the process quietly with status 141, what a
//! shell shows for a command stopped by SIGPIPE: no message, no panic, and no later line
//! pretends the output was complete. Any other failure to write stdout (disk full) is said on
//! stderr, exit 2. Writing to stderr never fails a command.

use std::io::Write as _;

/// Exit status when stdout is a closed pipe (128 + SIGPIPE).
pub const BROKEN_PIPE_EXIT: i32 = 141;

/// Writes one line to stdout, or ends the process (see the module).
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}") {
        fail(&e);
    }
}

/// Writes `text` as is to stdout, or ends the process (see the module).
pub fn raw(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        fail(&e);
    }
}

/// Writes one line to stderr; a failure is ignored (there is nowhere left to say it).
pub fn err_line(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// Flushes stdout at the end of a command, or ends the process (see the module).
pub fn finish() {
    if let Err(e) = std::io::stdout().lock().flush() {
        fail(&e);
    }
}

fn fail(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(BROKEN_PIPE_EXIT);
    }
    err_line(format_args!("nodetrust: cannot write the output: {e}"));
    std::process::exit(2);
}

/// `s` cut to `max` characters, the cut marked with an ellipsis.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `s` with control characters (terminal escapes a server could send) shown as `?`, line
/// breaks kept when `keep_newlines`.
pub fn printable(s: &str, keep_newlines: bool) -> String {
    s.chars()
        .map(|c| match c {
            '\n' if keep_newlines => '\n',
            '\t' | '\n' | '\r' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

/// `println!` that never panics: see [`line`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics: see [`err_line`].
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::err_line(format_args!($($arg)*))
    };
}

pub(crate) use errln;
pub(crate) use outln;
