//! A release's command template turned into a program and arguments for one instance.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// What starting an instance of a release takes.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// Template with `{port}`, `{version}` and `{instance}`; split like a shell would, never run by one.
    pub command: String,
    pub version: String,
    pub env: BTreeMap<String, String>,
    /// Run as this user (needs root).
    pub user: Option<String>,
    /// Working directory (the unpacked release, say).
    pub workdir: Option<PathBuf>,
    pub stop_signal: nix::sys::signal::Signal,
    pub stop_timeout: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    /// The template does not split into words (an unclosed quote); fix the stack file.
    #[error("release.command `{0}` cannot be split into words: {1}")]
    Split(String, String),
    #[error("release.command is empty")]
    Empty,
}

/// Fills the placeholders and splits the command into program and arguments.
pub fn expand(
    template: &str,
    port: u16,
    version: &str,
    instance: &str,
) -> Result<Vec<String>, CommandError> {
    let words = shell_words::split(template)
        .map_err(|e| CommandError::Split(template.to_owned(), e.to_string()))?;
    let words: Vec<String> = words
        .into_iter()
        .map(|w| {
            w.replace("{port}", &port.to_string())
                .replace("{version}", version)
                .replace("{instance}", instance)
        })
        .collect();
    if words.is_empty() {
        return Err(CommandError::Empty);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_placeholders_inside_words_and_keeps_quoted_spaces() {
        let argv = expand(
            "app --port {port} --name 'web {instance}' --v={version}",
            8080,
            "v2",
            "i-1",
        )
        .expect("ok");
        assert_eq!(
            argv,
            vec!["app", "--port", "8080", "--name", "web i-1", "--v=v2"]
        );
        // A value substituted in is never split again.
        let argv = expand("app {version}", 1, "a b", "i").expect("ok");
        assert_eq!(argv, vec!["app", "a b"]);
        assert!(matches!(
            expand("app 'unclosed", 1, "v", "i"),
            Err(CommandError::Split(..))
        ));
        assert_eq!(expand("  ", 1, "v", "i"), Err(CommandError::Empty));
    }
}
