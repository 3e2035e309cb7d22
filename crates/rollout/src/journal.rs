//! A deployment's record: its row in the store, its events, and the timeline the CLI prints.

use std::time::SystemTime;

use cutover_deploy::Progress;
use cutover_store::{DeploymentRow, Store};
use serde::Serialize;
use tokio::time::Instant;

use cutover_control::Side;
use cutover_store::StoreError;

/// One line of what happened, for the CLI's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub kind: &'static str,
    pub detail: String,
}

/// How a deploy ended.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub deployment: u64,
    pub from: String,
    pub to: String,
    pub strategy: String,
    pub progress: Progress,
    pub duration_ms: u64,
    /// The side taking the traffic now.
    pub live: Side,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.progress == Progress::Done
    }
}

pub struct Journal<'a> {
    pub store: &'a Store,
    /// The store key naming the live side.
    live_key: &'static str,
    pub row: DeploymentRow,
    pub started: Instant,
    last: Option<Progress>,
    on_event: Box<dyn FnMut(&Event) + 'a>,
}

/// The deployment that has not ended, if one has not.
pub fn in_progress(store: &Store) -> Result<Option<DeploymentRow>, StoreError> {
    Ok(store
        .deployments()?
        .into_iter()
        .rev()
        .find(|d| d.finished_at.is_none()))
}

/// The side that takes the traffic between deploys, as the store names it under `key` (blue
/// until a deploy swaps them).
pub fn live(store: &Store, key: &str) -> Result<Side, StoreError> {
    Ok(store
        .meta(key)?
        .and_then(|c| Side::parse(&c))
        .unwrap_or(Side::Blue))
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl<'a> Journal<'a> {
    /// Records a new deployment from the store's current release to `target`.
    pub fn begin(
        store: &'a Store,
        target: &str,
        strategy: &str,
        live_key: &'static str,
        on_event: impl FnMut(&Event) + 'a,
    ) -> Result<Self, StoreError> {
        let id = store.deployments()?.last().map_or(1, |d| d.id + 1);
        let row = DeploymentRow {
            id,
            from_version: store.current_release()?.unwrap_or_default(),
            to_version: target.to_owned(),
            strategy: strategy.to_owned(),
            started_at: now(),
            finished_at: None,
            duration_ms: None,
            progress: Progress::Rolling,
            steps: serde_json::json!([]),
        };
        store.save_deployment(&row)?;
        Ok(Self {
            store,
            live_key,
            row,
            started: Instant::now(),
            last: Some(Progress::Rolling),
            on_event: Box::new(on_event),
        })
    }

    /// Picks up the deployment still in progress (paused, or left by a process that stopped
    /// mid-way); `None` if every deployment has ended.
    pub fn resume(
        store: &'a Store,
        live_key: &'static str,
        on_event: impl FnMut(&Event) + 'a,
    ) -> Result<Option<Self>, StoreError> {
        let Some(row) = in_progress(store)? else {
            return Ok(None);
        };
        let last = Some(row.progress.clone());
        Ok(Some(Self {
            store,
            live_key,
            row,
            started: Instant::now(),
            last,
            on_event: Box::new(on_event),
        }))
    }

    pub fn id(&self) -> u64 {
        self.row.id
    }

    pub fn from(&self) -> &str {
        &self.row.from_version
    }

    pub fn to(&self) -> &str {
        &self.row.to_version
    }

    /// The side that takes the traffic between deploys.
    pub fn live(&self) -> Result<Side, StoreError> {
        live(self.store, self.live_key)
    }

    /// Recorded in the store before it is acted on, and shown.
    pub fn event(&mut self, kind: &'static str, detail: String) {
        let json = serde_json::json!({ "detail": detail });
        if let Err(e) = self.store.event(Some(self.row.id), kind, &json) {
            tracing::warn!("recording event: {e}");
        }
        (self.on_event)(&Event { kind, detail });
    }

    /// The progress last recorded.
    pub fn recorded(&self) -> &Progress {
        self.last.as_ref().unwrap_or(&Progress::Rolling)
    }

    /// A canary step behind the deploy, kept with the deployment for `history`.
    pub fn step(&mut self, record: crate::StepRecord) -> Result<(), StoreError> {
        let mut steps: Vec<crate::StepRecord> =
            serde_json::from_value(self.row.steps.clone()).unwrap_or_default();
        self.event(
            "step",
            format!("step {} ({}): {}", record.step, record.what, record.verdict),
        );
        steps.push(record);
        self.row.steps = serde_json::to_value(&steps).unwrap_or_default();
        self.store.save_deployment(&self.row)
    }

    /// Stops running a paused deploy: the row stays in progress, for `promote` or `resume` to
    /// pick up.
    pub fn paused(mut self, progress: Progress, live: Side) -> Outcome {
        self.event("pause", progress.to_string());
        Outcome {
            deployment: self.row.id,
            from: self.row.from_version.clone(),
            to: self.row.to_version.clone(),
            strategy: self.row.strategy.clone(),
            progress,
            duration_ms: self.started.elapsed().as_millis() as u64,
            live,
        }
    }

    pub fn progress(&mut self, progress: &Progress) -> Result<(), StoreError> {
        if self.last.as_ref() != Some(progress) {
            self.row.progress = progress.clone();
            self.store.save_deployment(&self.row)?;
            self.last = Some(progress.clone());
        }
        Ok(())
    }

    /// Ends the deployment; on success the target becomes the current release and `live` the
    /// live side.
    pub fn finish(mut self, progress: Progress, live: Side) -> Result<Outcome, StoreError> {
        if progress == Progress::Done {
            self.store.set_meta(self.live_key, live.name())?;
            self.store.set_current_release(&self.row.to_version)?;
        }
        let elapsed = self.started.elapsed();
        self.row.finished_at = Some(now());
        self.row.duration_ms = Some(elapsed.as_millis() as u64);
        self.row.progress = progress.clone();
        self.store.save_deployment(&self.row)?;
        let what = match &progress {
            Progress::Done => format!("done: every instance runs {}", self.row.to_version),
            other => other.to_string(),
        };
        self.event("end", what);
        Ok(Outcome {
            deployment: self.row.id,
            from: self.row.from_version.clone(),
            to: self.row.to_version.clone(),
            strategy: self.row.strategy.clone(),
            progress,
            duration_ms: elapsed.as_millis() as u64,
            live,
        })
    }
}
