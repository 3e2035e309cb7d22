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

pub use crate::exit::INVALID as EXIT_INVALID;

/// Parses durations such as `2s` or `500ms` in command-line arguments.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    cutover_spec::duration::parse(s)
}

/// Parses a release version given on the command line, by the stack file's rule.
pub fn parse_version(s: &str) -> Result<String, String> {
    cutover_spec::version::check(s).map(|()| s.to_owned())
}

/// Whether the stack file runs on AWS (has an `[aws]` section). A file that does not load is left
/// to the command, which reports it as it always does.
fn runs_on_aws(stack: &status::Stack) -> bool {
    cutover_spec::load(&stack.file).is_ok_and(|spec| spec.aws.is_some())
}

/// `deploy`, `rollback` and `status` on a stack file with `[aws]` go to `cutover aws`: the same
/// commands, wherever the stack runs.
#[cfg(feature = "aws")]
pub fn aws_stack(stack: &status::Stack, json: bool) -> Option<aws::Common> {
    runs_on_aws(stack).then(|| aws::Common {
        file: stack.file.clone(),
        data_dir: stack.data_dir.clone(),
        endpoint_url: None,
        json,
    })
}

/// Built without AWS: a stack file with `[aws]` gets a clear error, not a confusing one about
/// a daemon that is not running.
#[cfg(not(feature = "aws"))]
pub fn needs_aws(stack: &status::Stack) -> Option<std::process::ExitCode> {
    runs_on_aws(stack).then(|| {
        eprintln!(
            "error: {} runs its stack on AWS ([aws]), and this cutover was built without AWS \
             support: build it with `cargo build --release --features aws`",
            stack.file.display()
        );
        std::process::ExitCode::from(EXIT_INVALID)
    })
}
