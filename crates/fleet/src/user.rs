//! The unprivileged user an instance runs as, and the clean environment every instance starts
//! with: nothing of cutover's own environment reaches a service but an allow-list.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::PathBuf;

use nix::unistd::{Gid, Uid, User};

/// Variables passed from cutover's environment to every instance; everything else (cloud
/// credentials, database passwords, tokens in the operator's shell) stays behind.
pub const PASSED: [&str; 4] = ["PATH", "LANG", "LC_ALL", "TZ"];

/// `PATH` when cutover itself has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("release.user `{0}` does not exist on this host")]
    NoSuchUser(String),
    #[error("release.user `{0}`: cannot read its groups: {1}")]
    Groups(String, String),
    #[error("release.user `{0}` needs cutover to run as root")]
    NeedsRoot(String),
}

/// A service user as the kernel needs it: ids and every group it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUser {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    /// Supplementary groups (as `initgroups` would set them), the primary one included.
    pub groups: Vec<Gid>,
    pub home: PathBuf,
}

impl ServiceUser {
    /// Looks `name` up in the host's user database; the user must exist and cutover must be
    /// able to become it.
    pub fn lookup(name: &str) -> Result<Self, UserError> {
        let user = User::from_name(name)
            .ok()
            .flatten()
            .ok_or_else(|| UserError::NoSuchUser(name.to_owned()))?;
        if !nix::unistd::geteuid().is_root() && nix::unistd::geteuid() != user.uid {
            return Err(UserError::NeedsRoot(name.to_owned()));
        }
        let cname = CString::new(name)
            .map_err(|_| UserError::NoSuchUser(name.escape_debug().to_string()))?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid)
            .map_err(|e| UserError::Groups(name.to_owned(), e.to_string()))?;
        Ok(Self {
            name: name.to_owned(),
            uid: user.uid,
            gid: user.gid,
            groups,
            home: user.dir,
        })
    }

    /// Makes the current process this user: groups first, while it may still set them.
    /// Runs between fork and exec, so it only makes system calls on memory prepared before.
    pub fn become_user(&self) -> std::io::Result<()> {
        if nix::unistd::geteuid() == self.uid {
            return Ok(());
        }
        nix::unistd::setgroups(&self.groups)?;
        nix::unistd::setgid(self.gid)?;
        nix::unistd::setuid(self.uid)?;
        Ok(())
    }
}

/// What the stack file asks of this host that only this host can tell: `release.user` must
/// exist here, and (`to_run`) cutover must be able to become it. A stack on AWS runs its
/// instances elsewhere: nothing is asked of this host.
pub fn host_problems(
    spec: &cutover_spec::Spec,
    to_run: bool,
) -> Vec<cutover_spec::validate::Problem> {
    let Some(name) = spec.release.user.as_deref().filter(|_| spec.aws.is_none()) else {
        return Vec::new();
    };
    match ServiceUser::lookup(name) {
        Ok(_) => Vec::new(),
        Err(UserError::NeedsRoot(_)) if !to_run => Vec::new(),
        Err(e) => vec![cutover_spec::validate::Problem {
            path: "release.user".into(),
            message: match e {
                UserError::NoSuchUser(n) => format!("user `{n}` does not exist on this host"),
                UserError::NeedsRoot(n) => {
                    format!("running instances as `{n}` needs cutover to run as root")
                }
                e => e.to_string(),
            },
        }],
    }
}

/// The whole environment of an instance: the allow-list from `outer`, the service user's
/// identity, the release's own `env`, and cutover's variables last, so none can be overridden.
pub fn environment(
    outer: impl Fn(&str) -> Option<String>,
    user: Option<&ServiceUser>,
    release_env: &BTreeMap<String, String>,
    ours: &[(&str, String)],
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for name in PASSED {
        if let Some(v) = outer(name) {
            env.insert(name.to_owned(), v);
        }
    }
    env.entry("PATH".to_owned())
        .or_insert_with(|| DEFAULT_PATH.to_owned());
    match user {
        Some(u) => {
            env.insert("HOME".into(), u.home.display().to_string());
            env.insert("USER".into(), u.name.clone());
            env.insert("LOGNAME".into(), u.name.clone());
        }
        None => {
            for name in ["HOME", "USER", "LOGNAME"] {
                if let Some(v) = outer(name) {
                    env.insert(name.to_owned(), v);
                }
            }
        }
    }
    env.extend(release_env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(ours.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_allow_list_passes_and_ours_win() {
        let outer = |name: &str| match name {
            "PATH" => Some("/opt/bin".to_owned()),
            "AWS_SECRET_ACCESS_KEY" | "DATABASE_PASSWORD" => Some("secret".to_owned()),
            "HOME" => Some("/root".to_owned()),
            _ => None,
        };
        let release_env = BTreeMap::from([
            ("GREETING".to_owned(), "hi".to_owned()),
            ("PORT".to_owned(), "1".to_owned()),
        ]);
        let env = environment(outer, None, &release_env, &[("PORT", "8080".into())]);
        assert_eq!(
            env.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["GREETING", "HOME", "PATH", "PORT"]
        );
        assert_eq!(env["PORT"], "8080");
        assert_eq!(env["PATH"], "/opt/bin");
        let user = ServiceUser {
            name: "web".into(),
            uid: Uid::from_raw(1000),
            gid: Gid::from_raw(1000),
            groups: vec![Gid::from_raw(1000)],
            home: "/home/web".into(),
        };
        let env = environment(|_| None, Some(&user), &BTreeMap::new(), &[]);
        assert_eq!(env["HOME"], "/home/web");
        assert_eq!(env["USER"], "web");
        assert_eq!(env["PATH"], DEFAULT_PATH);
    }

    #[test]
    fn a_missing_user_is_named() {
        assert_eq!(
            ServiceUser::lookup("no-such-user-cutover"),
            Err(UserError::NoSuchUser("no-such-user-cutover".into()))
        );
        if nix::unistd::geteuid().is_root() {
            let root = ServiceUser::lookup("root").expect("root exists");
            assert!(root.uid.is_root() && root.groups.contains(&Gid::from_raw(0)));
        }
    }
}
