//! One module per subcommand; each returns the process exit code.

#[cfg(feature = "aws")]
pub mod aws;
pub mod check;
pub mod demo;
pub mod deploy;
pub mod fetch;
pub mod logs;
pub mod probe;
pub mod status;
pub mod up;

/// Exit code for input that cutover refuses: a bad stack file or bad arguments.
pub const EXIT_INVALID: u8 = 2;

/// Parses durations such as `2s` or `500ms` in command-line arguments.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    cutover_spec::duration::parse(s)
}
