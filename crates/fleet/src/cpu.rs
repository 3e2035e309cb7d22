//! CPU time of an instance's whole process tree (its process group), from /proc.

use std::time::Duration;

/// Fields of /proc/PID/stat after the command name: (pgrp, utime+stime, cutime+cstime), in
/// clock ticks.
fn stat_times(stat: &str) -> Option<(u32, u64, u64)> {
    let (_, after) = stat.rsplit_once(')')?;
    let f: Vec<&str> = after.split_whitespace().collect();
    // After ")": state(0) ppid(1) pgrp(2) … utime(11) stime(12) cutime(13) cstime(14).
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    let pgrp = f.get(2)?.parse::<u32>().ok()?;
    Some((pgrp, num(11)? + num(12)?, num(13)? + num(14)?))
}

/// Ticks of the kernel's clock per second (`getconf CLK_TCK`): 100 on Linux for decades, and
/// fixed in the kernel's ABI for /proc.
const TICKS_PER_SECOND: u64 = 100;

/// CPU time used so far by every process in the process group `pgid` (an instance and whatever
/// it started), plus what its leader has reaped from exited children.
pub fn group_cpu_time(pgid: u32) -> Option<Duration> {
    let leader = std::fs::read_to_string(format!("/proc/{pgid}/stat")).ok()?;
    let (_, own, reaped) = stat_times(&leader)?;
    let mut ticks = own + reaped;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == pgid {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((pgrp, t, _)) = stat_times(&stat) {
            if pgrp == pgid {
                ticks += t;
            }
        }
    }
    Some(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_spaces_in_the_name() {
        let line = "4242 (my (odd) app) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 7 3 20 0 1 0 \
                    12345 0 0";
        assert_eq!(stat_times(line), Some((4242, 200, 10)));
    }

    #[test]
    fn a_busy_process_group_accumulates_cpu_time() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .process_group(0)
            .spawn()
            .expect("spawn");
        let pgid = child.id();
        let start = std::time::Instant::now();
        let mut used = Duration::ZERO;
        while start.elapsed() < Duration::from_secs(10) && used < Duration::from_millis(200) {
            std::thread::sleep(Duration::from_millis(50));
            used = group_cpu_time(pgid).unwrap_or_default();
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(used >= Duration::from_millis(200), "only {used:?}");
    }
}
