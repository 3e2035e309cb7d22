//! An instance: one process of one version, on its own port.

use serde::Serialize;

/// A stable name for an instance, such as `i-v2-3f9a1c`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct InstanceId(pub String);

impl InstanceId {
    pub fn new(version: &str) -> Self {
        Self(format!("i-{version}-{:06x}", fastrand::u32(..0x100_0000)))
    }
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A launched instance as the fleet knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    pub id: InstanceId,
    pub version: String,
    pub pid: u32,
    pub port: u16,
    /// The process's start time in clock ticks since boot (`/proc/PID/stat` field 22): with the
    /// pid it tells a restarted daemon whether a recorded pid is still the same process.
    pub start_ticks: Option<u64>,
    pub log: std::path::PathBuf,
}

impl Instance {
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Whether `pid` is still the process that had `ticks` as its start time, and not a zombie:
/// a recorded pid alone could since have been given to some other process.
pub fn is_same_process(pid: u32, ticks: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some((_, after)) = stat.rsplit_once(')') else {
        return false;
    };
    let mut fields = after.split_whitespace();
    let state = fields.next().unwrap_or("Z");
    let started = after
        .split_whitespace()
        .nth(19)
        .and_then(|t| t.parse::<u64>().ok());
    state != "Z" && state != "X" && started == Some(ticks)
}

/// Processes whose environment says `INSTANCE_ID=<id>`: what is left of an instance whose
/// launch was recorded as an intent but whose pid never was (the daemon died in between).
pub fn find_by_instance_id(id: &str) -> Vec<u32> {
    let needle = format!("INSTANCE_ID={id}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// SIGKILLs the process group of every process [`find_by_instance_id`] finds; returns their pids.
/// Instances lead their own group, so this takes whatever they started with them.
pub fn kill_unrecorded(id: &str) -> Vec<u32> {
    let pids = find_by_instance_id(id);
    for pid in &pids {
        if let Ok(raw) = i32::try_from(*pid) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(raw),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    pids
}

/// Start time of a process in clock ticks since boot, from `/proc`.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count fields after the last `)`.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_process_by_its_instance_id() {
        let id = format!("i-test-{}", std::process::id());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("INSTANCE_ID", &id)
            .spawn()
            .expect("spawn sleep");
        // Until the child has exec'd, /proc shows the parent's environment: look again a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut found = find_by_instance_id(&id);
        while found.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
            found = find_by_instance_id(&id);
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found, vec![child.id()]);
        assert!(find_by_instance_id("i-nobody-000000").is_empty());
    }

    #[test]
    fn reads_our_own_start_time_and_names_are_distinct() {
        let ticks = start_ticks(std::process::id()).expect("own stat");
        assert!(ticks > 0);
        assert_eq!(
            start_ticks(std::process::id()),
            Some(ticks),
            "stable for a live process"
        );
        let a = InstanceId::new("v1");
        let b = InstanceId::new("v1");
        assert_ne!(a, b);
        assert!(a.0.starts_with("i-v1-"));
    }
}
