//! The local provider: instances as child processes, each in its own process group on its own port.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::command::{expand, CommandError, LaunchSpec};
use crate::instance::{start_ticks, Instance, InstanceId};
use crate::logs::{self, DEFAULT_MAX_BYTES};
use crate::user::{environment, ServiceUser, UserError};

/// How often an adopted instance's liveness is checked.
const ADOPTED_POLL: Duration = Duration::from_millis(100);
/// Upper bound on waiting for a process after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The program could not be started (missing, not executable); retrying will not help.
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The service user is missing or cannot be become; fix the host or the stack file.
    #[error(transparent)]
    User(#[from] UserError),
    #[error("no free port on 127.0.0.1: {0}")]
    Port(std::io::Error),
    #[error("cannot open the instance log {0}: {1}")]
    Log(PathBuf, std::io::Error),
    #[error("no instance `{0}`")]
    Unknown(InstanceId),
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exit {
    pub id: InstanceId,
    pub version: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// cutover asked it to stop; otherwise it crashed or quit on its own.
    pub requested: bool,
    pub ran_for_ms: u64,
    /// Another process holds its port now: most likely it took the port between the moment it
    /// was found free and the instance's bind, so the instance could not listen. Not the
    /// release's fault; launched again on another port.
    pub port_taken: bool,
}

/// How a stop went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StopReport {
    pub id: InstanceId,
    /// It exited after the stop signal, before the stop timeout.
    pub graceful: bool,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub took_ms: u64,
}

struct Running {
    instance: Instance,
    exited: watch::Receiver<Option<(Option<i32>, Option<i32>)>>,
    stopping: Arc<AtomicBool>,
    stop_signal: Signal,
    stop_timeout: Duration,
}

/// Launches, stops and watches local instances. Exits (crashes included) arrive on the channel
/// returned by [`LocalFleet::new`]; the fleet itself never restarts anything: that is the
/// controller's decision.
pub struct LocalFleet {
    logs_dir: PathBuf,
    log_max_bytes: u64,
    /// The program (and its arguments, before the log's path) that carries an instance's output
    /// into its log ([`logs::relay`]); without one, the instance writes into the file itself.
    log_relay: Option<(PathBuf, Vec<std::ffi::OsString>)>,
    running: Mutex<BTreeMap<InstanceId, Running>>,
    /// Ports handed to launches that are not in `running` yet. A port is free only until its
    /// instance binds it: two launches must never be handed the same one, or both would be one
    /// target, and the one that fails to bind would take the other's target out with it.
    claimed: Mutex<BTreeSet<u16>>,
    exits: mpsc::UnboundedSender<Exit>,
}

/// How many ports a launch tries before it gives up on finding one no instance of ours holds.
const PORT_ATTEMPTS: usize = 16;

/// A port claimed for one launch; released when the launch is over, by then held in `running`
/// (or not needed).
struct PortClaim<'a> {
    fleet: &'a LocalFleet,
    port: u16,
}

impl Drop for PortClaim<'_> {
    fn drop(&mut self) {
        self.fleet.claimed_ports().remove(&self.port);
    }
}

impl LocalFleet {
    pub fn new(logs_dir: PathBuf) -> (Self, mpsc::UnboundedReceiver<Exit>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let fleet = Self {
            logs_dir,
            log_max_bytes: DEFAULT_MAX_BYTES,
            log_relay: None,
            running: Mutex::new(BTreeMap::new()),
            claimed: Mutex::new(BTreeSet::new()),
            exits: tx,
        };
        (fleet, rx)
    }

    /// Instances write into a pipe that `program args.. LOG` copies into their log, so that a
    /// log that cannot be written (a full disk) never fails their writes.
    pub fn with_log_relay(mut self, program: PathBuf, args: Vec<std::ffi::OsString>) -> Self {
        self.log_relay = Some((program, args));
        self
    }

    pub fn with_log_max_bytes(mut self, bytes: u64) -> Self {
        self.log_max_bytes = bytes;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<InstanceId, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn claimed_ports(&self) -> std::sync::MutexGuard<'_, BTreeSet<u16>> {
        self.claimed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A free port of 127.0.0.1 that no instance of this fleet holds or is about to bind.
    fn claim_port(&self) -> Result<PortClaim<'_>, FleetError> {
        self.claim_port_from(free_port)
    }

    fn claim_port_from(
        &self,
        mut pick: impl FnMut() -> std::io::Result<u16>,
    ) -> Result<PortClaim<'_>, FleetError> {
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = pick().map_err(FleetError::Port)?;
            // Lock order: claimed, then running (nothing takes them the other way round).
            let mut claimed = self.claimed_ports();
            let held =
                claimed.contains(&port) || self.lock().values().any(|r| r.instance.port == port);
            if !held {
                claimed.insert(port);
                return Ok(PortClaim { fleet: self, port });
            }
            last = Some(port);
        }
        Err(FleetError::Port(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!(
                "{PORT_ATTEMPTS} ports in a row were already held by instances (last {})",
                last.unwrap_or(0)
            ),
        )))
    }

    /// The instances still running.
    pub fn instances(&self) -> Vec<Instance> {
        self.lock().values().map(|r| r.instance.clone()).collect()
    }

    /// Starts one instance of `spec`'s version on a free port of 127.0.0.1.
    pub async fn launch(&self, spec: &LaunchSpec) -> Result<Instance, FleetError> {
        self.launch_as(InstanceId::new(&spec.version), spec).await
    }

    /// Like [`LocalFleet::launch`] under an id the caller chose (and recorded) beforehand.
    pub async fn launch_as(
        &self,
        id: InstanceId,
        spec: &LaunchSpec,
    ) -> Result<Instance, FleetError> {
        let claim = self.claim_port()?;
        let port = claim.port;
        let argv = expand(&spec.command, port, &spec.version, &id.0)?;
        let user = spec.user.as_deref().map(ServiceUser::lookup).transpose()?;
        let env = environment(
            |name| std::env::var(name).ok(),
            user.as_ref(),
            &spec.env,
            &[
                ("PORT", port.to_string()),
                ("APP_VERSION", spec.version.clone()),
                ("INSTANCE_ID", id.0.clone()),
            ],
        );
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .envs(&env)
            .stdin(Stdio::null())
            // Its own group, so a stop reaches every process the instance started.
            .process_group(0)
            .kill_on_drop(false);
        if let Some(dir) = &spec.workdir {
            cmd.current_dir(dir);
        }
        // std's `uid`/`gid` would drop the user's supplementary groups: switch here instead,
        // groups first, as initgroups(3) and then setuid would. The instance also gets the usual
        // umask back, whatever cutover keeps for its own files.
        // SAFETY: only system calls on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
                match &user {
                    Some(user) => user.become_user(),
                    None => Ok(()),
                }
            });
        }
        std::fs::create_dir_all(&self.logs_dir)
            .map_err(|e| FleetError::Log(self.logs_dir.clone(), e))?;
        let log_path = self.logs_dir.join(format!("{id}.log"));
        let (out, err) = self.output(&log_path)?;
        cmd.stdout(out).stderr(err);
        // Before the spawn, so that the time an instance ran is never under-counted (a busy
        // machine can hold this thread between the spawn and the next clock read).
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|source| FleetError::Spawn {
            program: argv[0].clone(),
            source,
        })?;
        // The pipe's last write ends are the instance's own: its relay sees the end of its
        // output when the instance (and whatever it started) is gone.
        drop(cmd);
        let pid = child.id().unwrap_or(0);
        let instance = Instance {
            id: id.clone(),
            version: spec.version.clone(),
            pid,
            port,
            start_ticks: start_ticks(pid),
            log: log_path,
        };
        let (exit_tx, exit_rx) = watch::channel(None);
        let stopping = Arc::new(AtomicBool::new(false));
        let (events, flag, ev_id, version) = (
            self.exits.clone(),
            stopping.clone(),
            id.clone(),
            spec.version.clone(),
        );
        tokio::spawn(async move {
            use std::os::unix::process::ExitStatusExt;
            let (code, signal) = match child.wait().await {
                Ok(status) => (status.code(), status.signal()),
                Err(_) => (None, None),
            };
            let _ = exit_tx.send(Some((code, signal)));
            let requested = flag.load(Ordering::Acquire);
            let ran_for_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let port_taken = !requested && code.is_some() && port_in_use(port);
            if port_taken {
                tracing::warn!(instance = %ev_id, port, "instance exited and another process holds its port: launching again on another");
            } else if !requested {
                tracing::warn!(instance = %ev_id, ?code, ?signal, "instance exited on its own");
            }
            let _ = events.send(Exit {
                id: ev_id,
                version,
                code,
                signal,
                requested,
                ran_for_ms,
                port_taken,
            });
        });
        self.lock().insert(
            id,
            Running {
                instance: instance.clone(),
                exited: exit_rx,
                stopping,
                stop_signal: spec.stop_signal,
                stop_timeout: spec.stop_timeout,
            },
        );
        // Held in `running` from here on.
        drop(claim);
        tracing::info!(instance = %instance.id, pid, port, "launched");
        Ok(instance)
    }

    /// The instance's stdout and stderr: the write end of a pipe to a relay of its own when
    /// one is configured, else the log file itself.
    fn output(&self, log_path: &Path) -> Result<(Stdio, Stdio), FleetError> {
        let failed = |e| FleetError::Log(log_path.to_owned(), e);
        let direct = || -> Result<(Stdio, Stdio), FleetError> {
            let log = logs::open(log_path).map_err(failed)?;
            let err_log = log.try_clone().map_err(failed)?;
            Ok((Stdio::from(log), Stdio::from(err_log)))
        };
        let Some((program, args)) = &self.log_relay else {
            return direct();
        };
        let (reader, writer) = std::io::pipe().map_err(failed)?;
        let err_writer = writer.try_clone().map_err(failed)?;
        let mut relay = tokio::process::Command::new(program);
        relay
            .args(args)
            .arg(log_path)
            .stdin(Stdio::from(reader))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: a stop signal to the instance's group, or a terminal's ^C, does
            // not cut the instance's last words short. It ends with the instance's output.
            .process_group(0)
            .kill_on_drop(false);
        let mut child = match relay.spawn() {
            Ok(child) => child,
            Err(e) => {
                // The relay's program is gone (replaced on disk): the log still works without.
                tracing::warn!(program = %program.display(), error = %e, "cannot start a log relay: the instance writes its log itself");
                return direct();
            }
        };
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok((Stdio::from(writer), Stdio::from(err_writer)))
    }

    /// Sends the stop signal to the instance's process group, waits up to the stop timeout, then
    /// SIGKILLs the group. Whatever else is left in the group is killed too.
    pub async fn stop(&self, id: &InstanceId) -> Result<StopReport, FleetError> {
        let (pgid, mut exited, signal, timeout) = {
            let running = self.lock();
            let r = running
                .get(id)
                .ok_or_else(|| FleetError::Unknown(id.clone()))?;
            r.stopping.store(true, Ordering::Release);
            (
                r.instance.pid,
                r.exited.clone(),
                r.stop_signal,
                r.stop_timeout,
            )
        };
        let started = Instant::now();
        let group = Pid::from_raw(i32::try_from(pgid).unwrap_or(0));
        let _ = killpg(group, signal);
        let graceful = tokio::time::timeout(timeout, exited.wait_for(Option::is_some))
            .await
            .is_ok();
        // Leftovers of a graceful exit, or everything after the timeout.
        let _ = killpg(group, Signal::SIGKILL);
        let _ = tokio::time::timeout(KILL_WAIT, exited.wait_for(Option::is_some)).await;
        let (code, signal) = exited.borrow().unwrap_or((None, None));
        self.lock().remove(id);
        Ok(StopReport {
            id: id.clone(),
            graceful,
            code,
            signal,
            took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Takes charge of an instance a previous daemon started, after the caller checked with
    /// [`crate::instance::is_same_process`] that it is still that process. Its exit is noticed by
    /// watching `/proc`, since only its parent could wait for it.
    pub fn adopt(&self, instance: Instance, stop_signal: Signal, stop_timeout: Duration) {
        let (exit_tx, exit_rx) = watch::channel(None);
        let stopping = Arc::new(AtomicBool::new(false));
        let (events, flag, id, version) = (
            self.exits.clone(),
            stopping.clone(),
            instance.id.clone(),
            instance.version.clone(),
        );
        let (pid, ticks) = (instance.pid, instance.start_ticks.unwrap_or(0));
        let started = Instant::now();
        tokio::spawn(async move {
            while crate::instance::is_same_process(pid, ticks) {
                tokio::time::sleep(ADOPTED_POLL).await;
            }
            let _ = exit_tx.send(Some((None, None)));
            let requested = flag.load(Ordering::Acquire);
            let ran_for_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let _ = events.send(Exit {
                id,
                version,
                code: None,
                signal: None,
                requested,
                ran_for_ms,
                port_taken: false,
            });
        });
        tracing::info!(instance = %instance.id, pid, "adopted");
        self.lock().insert(
            instance.id.clone(),
            Running {
                instance,
                exited: exit_rx,
                stopping,
                stop_signal,
                stop_timeout,
            },
        );
    }

    /// Rotates every running instance's log that has grown past the limit.
    pub fn rotate_logs(&self) {
        let paths: Vec<PathBuf> = self
            .lock()
            .values()
            .map(|r| r.instance.log.clone())
            .collect();
        for path in paths {
            if let Err(e) = logs::rotate_if_larger(&path, self.log_max_bytes) {
                tracing::warn!(path = %path.display(), error = %e, "cannot rotate an instance log");
            }
        }
    }

    /// Forgets an instance that exited on its own (after its [`Exit`] was handled).
    pub fn forget(&self, id: &InstanceId) {
        self.lock().remove(id);
    }
}

/// Whether something listens on `port` of 127.0.0.1 (a listener's bind fails for it; std sets
/// SO_REUSEADDR, so connections left in TIME_WAIT do not count).
fn port_in_use(port: u16) -> bool {
    matches!(std::net::TcpListener::bind(("127.0.0.1", port)), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
}

/// A port on 127.0.0.1 that was free a moment ago; the instance binds it right after.
fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_claimed_or_held_is_never_handed_out_twice() {
        let (fleet, _exits) = LocalFleet::new(std::env::temp_dir());
        let mut offers = [4000u16, 4000, 4001].into_iter();
        let first = fleet
            .claim_port_from(|| Ok(offers.next().unwrap_or(0)))
            .expect("a port");
        let second = fleet
            .claim_port_from(|| Ok(offers.next().unwrap_or(0)))
            .expect("a port");
        assert_eq!((first.port, second.port), (4000, 4001));
        drop(first);
        let again = fleet.claim_port_from(|| Ok(4000)).expect("released");
        assert_eq!(again.port, 4000);
        assert!(matches!(
            fleet.claim_port_from(|| Ok(4001)),
            Err(FleetError::Port(_))
        ));
    }
}
