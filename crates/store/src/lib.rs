//! The store: SQLite (WAL) holding releases, deployments with their events, and instances, so a
//! restarted daemon knows what it was doing and which processes are its own.

use std::path::Path;
use std::sync::Mutex;

use cutover_control::Progress;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused; a full disk or a locked file may clear, a corrupt file will not.
    #[error("state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state database holds unreadable JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// One deployment's record does not read as this binary knows it; the others are intact.
    #[error("state database: deployment {id} has an unreadable {field}: {error}")]
    Deployment {
        id: u64,
        field: &'static str,
        error: serde_json::Error,
    },
    /// Written by a newer cutover: reading on could misread it, and writing could spoil it.
    #[error("state database is at schema {found}, and this cutover knows schemas up to {known}: run the cutover that wrote it, or a newer one")]
    Newer { found: u32, known: u32 },
}

type Result<T> = std::result::Result<T, StoreError>;

/// A deployment row: where it went from and to, how, and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRow {
    pub id: u64,
    pub from_version: String,
    pub to_version: String,
    pub strategy: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub progress: Progress,
    /// The steps it went through, with their verdicts (JSON array).
    pub steps: serde_json::Value,
}

/// A change of the desired size: by a policy (with the metric values that caused it) or by hand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingRow {
    pub at: String,
    pub from: u32,
    pub to: u32,
    pub reason: String,
    pub metrics: serde_json::Value,
}

/// A cloud resource the stack uses: one cutover created (and will delete on `destroy`), or an
/// existing one it adopted (and leaves alone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRow {
    /// Such as `load-balancer`, `target-group:blue`, `auto-scaling-group`.
    pub kind: String,
    /// ARN or ID.
    pub id: String,
    pub name: String,
    pub created: bool,
}

/// An instance this daemon started and has not yet seen stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRow {
    pub id: String,
    pub version: String,
    pub pid: u32,
    pub start_ticks: Option<u64>,
    pub port: u16,
    pub log: String,
}

pub struct Store {
    conn: Mutex<Connection>,
}

/// The first schema, as stores were written before migrations were numbered (those stores are
/// at `user_version` 0 and hold these tables already, which is why every statement may find
/// its table there).
const SCHEMA_1: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS releases (
    version TEXT PRIMARY KEY,
    command TEXT,
    first_seen TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY,
    from_version TEXT NOT NULL,
    to_version TEXT NOT NULL,
    strategy TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    duration_ms INTEGER,
    progress TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    deployment_id INTEGER REFERENCES deployments(id),
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS scaling (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    from_size INTEGER NOT NULL,
    to_size INTEGER NOT NULL,
    reason TEXT NOT NULL,
    metrics TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    pid INTEGER NOT NULL,
    start_ticks INTEGER,
    port INTEGER NOT NULL,
    log TEXT NOT NULL,
    launched_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    stopped_at TEXT
);
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    recorded_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    deleted_at TEXT,
    PRIMARY KEY (kind, id)
);
";

/// One schema change; its number is its place in [`MIGRATIONS`] plus one.
type Migration = fn(&Connection) -> rusqlite::Result<()>;

/// Every schema change in order. A store records the last one it had in `PRAGMA user_version`;
/// opening applies the rest in one transaction. Append only: never edit or reorder.
const MIGRATIONS: &[Migration] = &[
    // 1: releases, deployments, events, scaling, instances, resources.
    |c| c.execute_batch(SCHEMA_1),
    // 2: deployments record their steps with verdicts. Stores from before numbering may
    // have the column already.
    |c| {
        let has = c
            .prepare("SELECT 1 FROM pragma_table_info('deployments') WHERE name = 'steps'")?
            .exists([])?;
        if !has {
            c.execute_batch("ALTER TABLE deployments ADD COLUMN steps TEXT NOT NULL DEFAULT '[]'")?;
        }
        Ok(())
    },
];

/// The schema this binary writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

fn migrate(conn: &Connection) -> Result<()> {
    let found: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Newer {
            found,
            known: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let applied = (|| {
        // Another process may have migrated while this one waited for the lock.
        let found: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for migration in MIGRATIONS.iter().skip(found as usize) {
            migration(conn)?;
        }
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
    })();
    match applied {
        Ok(()) => Ok(conn.execute_batch("COMMIT")?),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e.into())
        }
    }
}

impl Store {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Each write is an intent the daemon acts on next: make it durable first.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn current_release(&self) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = 'current'", [], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_current_release(&self, version: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO meta (key, value) VALUES ('current', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1",
            params![version],
        )?;
        Ok(())
    }

    /// A value kept between runs under `key`.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
            params![key, value],
        )?;
        Ok(())
    }

    /// Reads and removes `key` in one statement: a value written by another process is taken
    /// by exactly one reader.
    pub fn take_meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "DELETE FROM meta WHERE key = ?1 RETURNING value",
                params![key],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Sets `key` only if it has no value; whether it did. Two processes claiming the same key
    /// at once: one wins.
    pub fn claim_meta(&self, key: &str, value: &str) -> Result<bool> {
        let n = self.conn().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO NOTHING",
            params![key, value],
        )?;
        Ok(n == 1)
    }

    pub fn clear_meta(&self, key: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM meta WHERE key = ?1", params![key])?;
        Ok(())
    }

    /// Forgets the current release: the stack runs nothing (its resources were destroyed).
    pub fn clear_current_release(&self) -> Result<()> {
        self.clear_meta("current")
    }

    /// Records a resource before anything depends on it, so a failure later still finds it.
    pub fn record_resource(&self, r: &ResourceRow) -> Result<()> {
        self.conn().execute(
            "INSERT INTO resources (kind, id, name, created) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(kind, id) DO UPDATE SET name = ?3, created = ?4, deleted_at = NULL",
            params![r.kind, r.id, r.name, r.created],
        )?;
        Ok(())
    }

    /// Resources recorded and not deleted, oldest first.
    pub fn resources(&self) -> Result<Vec<ResourceRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT kind, id, name, created FROM resources WHERE deleted_at IS NULL ORDER BY rowid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ResourceRow {
                kind: r.get(0)?,
                id: r.get(1)?,
                name: r.get(2)?,
                created: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    pub fn resource_deleted(&self, kind: &str, id: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE resources SET deleted_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             WHERE kind = ?1 AND id = ?2",
            params![kind, id],
        )?;
        Ok(())
    }

    /// The previous release kept warm for a rollback by flip, and until when (Unix seconds).
    pub fn warm(&self) -> Result<Option<(String, u64)>> {
        let v: Option<String> = self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = 'warm'", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(v.and_then(|v| {
            let (version, until) = v.rsplit_once(' ')?;
            Some((version.to_owned(), until.parse().ok()?))
        }))
    }

    pub fn set_warm(&self, warm: Option<(&str, u64)>) -> Result<()> {
        let conn = self.conn();
        match warm {
            Some((version, until)) => conn.execute(
                "INSERT INTO meta (key, value) VALUES ('warm', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1",
                params![format!("{version} {until}")],
            )?,
            None => conn.execute("DELETE FROM meta WHERE key = 'warm'", [])?,
        };
        Ok(())
    }

    /// The desired size last set by autoscaling or `cutover scale`, if any.
    pub fn desired(&self) -> Result<Option<u32>> {
        let v: Option<String> = self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = 'desired'", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(v.and_then(|v| v.parse().ok()))
    }

    /// Records a scaling action and the desired size it set, in one transaction.
    pub fn scaled(
        &self,
        from: u32,
        to: u32,
        reason: &str,
        metrics: &serde_json::Value,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO scaling (from_size, to_size, reason, metrics) VALUES (?1, ?2, ?3, ?4)",
            params![from, to, reason, metrics.to_string()],
        )?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('desired', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1",
            params![to.to_string()],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn scaling(&self) -> Result<Vec<ScalingRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT at, from_size, to_size, reason, metrics FROM scaling ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                ScalingRow {
                    at: r.get(0)?,
                    from: r.get(1)?,
                    to: r.get(2)?,
                    reason: r.get(3)?,
                    metrics: serde_json::Value::Null,
                },
                r.get::<_, String>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (row, metrics) = row?;
            out.push(ScalingRow {
                metrics: serde_json::from_str(&metrics)?,
                ..row
            });
        }
        Ok(out)
    }

    /// Remembers a release and its command (None: the stack file's).
    pub fn record_release(&self, version: &str, command: Option<&str>) -> Result<()> {
        self.conn().execute(
            "INSERT INTO releases (version, command) VALUES (?1, ?2)
             ON CONFLICT(version) DO UPDATE SET command = COALESCE(?2, command)",
            params![version, command],
        )?;
        Ok(())
    }

    /// Every release that has its own command.
    pub fn release_commands(&self) -> Result<Vec<(String, String)>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT version, command FROM releases WHERE command IS NOT NULL")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    pub fn save_deployment(&self, d: &DeploymentRow) -> Result<()> {
        self.conn().execute(
            "INSERT INTO deployments (id, from_version, to_version, strategy, started_at, finished_at, duration_ms, progress, steps)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(id) DO UPDATE SET finished_at = ?6, duration_ms = ?7, progress = ?8, steps = ?9",
            params![
                d.id,
                d.from_version,
                d.to_version,
                d.strategy,
                d.started_at,
                d.finished_at,
                d.duration_ms,
                serde_json::to_string(&d.progress)?,
                serde_json::to_string(&d.steps)?
            ],
        )?;
        Ok(())
    }

    pub fn deployments(&self) -> Result<Vec<DeploymentRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, from_version, to_version, strategy, started_at, finished_at, duration_ms, progress, steps
             FROM deployments ORDER BY id",
        )?;
        // The JSON columns are read as text here and parsed outside SQLite's closure.
        let rows = stmt.query_map([], |r| {
            let row = DeploymentRow {
                id: r.get(0)?,
                from_version: r.get(1)?,
                to_version: r.get(2)?,
                strategy: r.get(3)?,
                started_at: r.get(4)?,
                finished_at: r.get(5)?,
                duration_ms: r.get(6)?,
                progress: Progress::Rolling,
                steps: serde_json::Value::Null,
            };
            Ok((row, r.get::<_, String>(7)?, r.get::<_, String>(8)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (row, progress, steps) = row?;
            let unreadable = |field, error| StoreError::Deployment {
                id: row.id,
                field,
                error,
            };
            out.push(DeploymentRow {
                progress: serde_json::from_str(&progress).map_err(|e| unreadable("progress", e))?,
                steps: serde_json::from_str(&steps).map_err(|e| unreadable("steps", e))?,
                ..row
            });
        }
        Ok(out)
    }

    /// Records an intent or an observation, before the daemon acts on it.
    pub fn event(
        &self,
        deployment: Option<u64>,
        kind: &str,
        detail: &serde_json::Value,
    ) -> Result<()> {
        self.conn().execute(
            "INSERT INTO events (deployment_id, kind, detail) VALUES (?1, ?2, ?3)",
            params![deployment, kind, detail.to_string()],
        )?;
        Ok(())
    }

    /// Events of a deployment, oldest first: (at, kind, detail).
    pub fn events(&self, deployment: u64) -> Result<Vec<(String, String, serde_json::Value)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT at, kind, detail FROM events WHERE deployment_id = ?1 ORDER BY id")?;
        let rows = stmt.query_map(params![deployment], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (at, kind, detail) = row?;
            out.push((at, kind, serde_json::from_str(&detail)?));
        }
        Ok(out)
    }

    pub fn instance_started(&self, i: &InstanceRow) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO instances (id, version, pid, start_ticks, port, log) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![i.id, i.version, i.pid, i.start_ticks, i.port, i.log],
        )?;
        Ok(())
    }

    /// Records that an instance is about to be launched, before its pid exists (pid 0).
    pub fn instance_intended(&self, id: &str, version: &str) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO instances (id, version, pid, start_ticks, port, log) VALUES (?1, ?2, 0, NULL, 0, '')",
            params![id, version],
        )?;
        Ok(())
    }

    pub fn instance_stopped(&self, id: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE instances SET stopped_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1",
            params![id],
        )?;
        Ok(())
    }

    /// Instances started and not recorded as stopped: a restarted daemon's candidates for adoption.
    pub fn live_instances(&self) -> Result<Vec<InstanceRow>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT id, version, pid, start_ticks, port, log FROM instances WHERE stopped_at IS NULL ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(InstanceRow {
                id: r.get(0)?,
                version: r.get(1)?,
                pid: r.get(2)?,
                start_ticks: r.get(3)?,
                port: r.get(4)?,
                log: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_recorded_until_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        let row = |kind: &str, id: &str, created| ResourceRow {
            kind: kind.into(),
            id: id.into(),
            name: format!("{kind} name"),
            created,
        };
        {
            let s = Store::open(&path).expect("open");
            s.record_resource(&row("load-balancer", "arn:lb", true))
                .expect("record");
            s.record_resource(&row("listener", "arn:l", false))
                .expect("record");
            s.resource_deleted("load-balancer", "arn:lb")
                .expect("delete");
            s.set_meta("aws.live", "green").expect("meta");
        }
        let s = Store::open(&path).expect("reopen");
        assert_eq!(
            s.resources().expect("read"),
            [row("listener", "arn:l", false)]
        );
        assert_eq!(s.meta("aws.live").expect("meta").as_deref(), Some("green"));
        assert_eq!(s.meta("absent").expect("meta"), None);
    }

    #[test]
    fn a_claimed_key_is_claimed_once_and_taken_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        let one = Store::open(&path).expect("open");
        let two = Store::open(&path).expect("open again");
        assert!(one.claim_meta("k", "one").expect("claim"));
        assert!(!two.claim_meta("k", "two").expect("claim"), "already held");
        assert_eq!(two.take_meta("k").expect("take").as_deref(), Some("one"));
        assert_eq!(one.take_meta("k").expect("take"), None, "taken once");
        assert!(two.claim_meta("k", "two").expect("claim"), "free again");
    }

    #[test]
    fn everything_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        {
            let s = Store::open(&path).expect("open");
            s.set_current_release("v1").expect("current");
            s.record_release("v3", Some("app --bad")).expect("release");
            let d = DeploymentRow {
                id: 1,
                from_version: "v1".into(),
                to_version: "v2".into(),
                strategy: "rolling".into(),
                started_at: "2026-11-25T00:00:00Z".into(),
                finished_at: None,
                duration_ms: None,
                progress: Progress::Rolling,
                steps: serde_json::json!([{"step": 1, "verdict": "pass"}]),
            };
            s.save_deployment(&d).expect("save");
            s.save_deployment(&DeploymentRow {
                duration_ms: Some(5),
                finished_at: Some("x".into()),
                ..d
            })
            .expect("update");
            s.event(Some(1), "launch", &serde_json::json!({"version": "v2"}))
                .expect("event");
            let i = InstanceRow {
                id: "i-v1-1".into(),
                version: "v1".into(),
                pid: 42,
                start_ticks: Some(7),
                port: 9000,
                log: "/l".into(),
            };
            s.instance_started(&i).expect("instance");
            s.instance_started(&InstanceRow {
                id: "i-v1-2".into(),
                ..i
            })
            .expect("instance");
            s.instance_stopped("i-v1-1").expect("stopped");
            assert_eq!(s.desired().expect("desired"), None);
            s.scaled(
                1,
                2,
                "cpu above 90",
                &serde_json::json!([{"values": [95.0]}]),
            )
            .expect("scaled");
        }
        let s = Store::open(&path).expect("reopen");
        assert_eq!(s.current_release().expect("current").as_deref(), Some("v1"));
        assert_eq!(
            s.release_commands().expect("commands"),
            vec![("v3".into(), "app --bad".into())]
        );
        let ds = s.deployments().expect("deployments");
        assert_eq!(ds.len(), 1);
        assert_eq!(ds[0].duration_ms, Some(5));
        assert_eq!(s.events(1).expect("events")[0].1, "launch");
        let live = s.live_instances().expect("live");
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].id, "i-v1-2");
        assert_eq!(s.desired().expect("desired"), Some(2));
        assert_eq!(s.warm().expect("warm"), None);
        s.set_warm(Some(("v1", 1_800_000_000))).expect("warm");
        assert_eq!(s.warm().expect("warm"), Some(("v1".into(), 1_800_000_000)));
        s.set_warm(None).expect("no warm");
        assert_eq!(s.warm().expect("warm"), None);
        let scaling = s.scaling().expect("scaling");
        assert_eq!((scaling[0].from, scaling[0].to), (1, 2));
        assert_eq!(scaling[0].metrics[0]["values"][0], 95.0);
        assert_eq!(ds[0].steps[0]["verdict"], "pass");
    }

    #[test]
    fn a_store_from_before_numbered_migrations_is_brought_up_to_date() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        {
            // What a store written before steps and migrations looked like.
            let c = Connection::open(&path).expect("open");
            c.execute_batch(SCHEMA_1).expect("old schema");
            c.execute(
                "INSERT INTO deployments (id, from_version, to_version, strategy, started_at, progress)
                 VALUES (1, 'v1', 'v2', 'rolling', 'then', '{\"progress\":\"done\"}')",
                [],
            )
            .expect("old row");
        }
        let s = Store::open(&path).expect("migrates");
        let ds = s.deployments().expect("deployments");
        assert_eq!(ds[0].progress, Progress::Done);
        assert_eq!(ds[0].steps, serde_json::json!([]));
        let version: u32 = s
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        drop(s);
        // Opening again applies nothing twice.
        Store::open(&path).expect("reopens");
    }

    #[test]
    fn a_store_from_a_newer_cutover_is_refused_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        {
            let c = Connection::open(&path).expect("open");
            c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .expect("version");
        }
        let Err(e) = Store::open(&path) else {
            panic!("a newer store was opened");
        };
        assert!(e.to_string().contains("knows schemas up to"), "{e}");
        let c = Connection::open(&path).expect("open");
        let tables: u32 = c
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .expect("count");
        assert_eq!(tables, 0, "nothing was created");
    }

    #[test]
    fn an_unreadable_progress_names_its_deployment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(&dir.path().join("state.db")).expect("open");
        s.conn()
            .execute(
                "INSERT INTO deployments (id, from_version, to_version, strategy, started_at, progress)
                 VALUES (7, 'v1', 'v2', 'rolling', 'then', '{\"progress\":\"sideways\"}')",
                [],
            )
            .expect("row");
        let e = s.deployments().expect_err("unreadable");
        assert!(
            e.to_string()
                .contains("deployment 7 has an unreadable progress"),
            "{e}"
        );
    }
}
