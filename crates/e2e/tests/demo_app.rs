//! The demo service as a real process: every endpoint and every fault knob.

use std::time::{Duration, Instant};

use base64::Engine;
use cutover_e2e::{client, wait_for, DemoApp};

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIVYoSgXvLEJbYNnfHdViZNZU2l4eKYBHj+qfFYhp0EV alice@example";
const KEY_B: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZhc46SpR86M30JK3zAgzzsyeCErmciXYg++plekDK1 bob@example";

#[test]
fn health_reports_version_and_time() {
    let app = DemoApp::start(&["--version", "v7"]);
    let resp = client().get(app.url("/health")).send().expect("health");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-app-version"], "v7");
    let body: serde_json::Value = resp.json().expect("json");
    assert_eq!(body["version"], "v7");
    let time = body["time"].as_str().expect("time string");
    assert!(
        time.ends_with('Z') && time.len() >= 20 && time.as_bytes()[10] == b'T',
        "not RFC 3339 UTC: {time}"
    );
}

#[test]
fn root_says_hi_and_version_comes_from_env() {
    let app = DemoApp::start_with_env(&[], &[("APP_VERSION", "env-v3")]);
    let resp = client().get(app.url("/")).send().expect("get /");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-app-version"], "env-v3");
    assert_eq!(resp.text().expect("body"), "Hi");
    let missing = client().get(app.url("/nope")).send().expect("get /nope");
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["x-app-version"],
        "env-v3",
        "every response carries the version"
    );
}

#[test]
fn fail_health_answers_503() {
    let app = DemoApp::start(&["--fail-health"]);
    let resp = client().get(app.url("/health")).send().expect("health");
    assert_eq!(resp.status(), 503);
    assert_eq!(
        client().get(app.url("/")).send().expect("get /").status(),
        200
    );
}

#[test]
fn error_rate_fails_that_fraction_of_root() {
    let app = DemoApp::start(&["--error-rate", "0.2"]);
    let c = client();
    let n = 1000;
    let errors = (0..n)
        .filter(|_| c.get(app.url("/")).send().expect("get /").status() == 500)
        .count();
    // Binomial(1000, 0.2): the standard deviation is about 13, so 120..280 is over six of them.
    assert!(
        (120..=280).contains(&errors),
        "{errors} of {n} failed; expected about 200"
    );
    assert_eq!(
        c.get(app.url("/health")).send().expect("health").status(),
        200,
        "health is not affected"
    );
}

#[test]
fn latency_delays_root_but_not_health() {
    let app = DemoApp::start(&["--latency", "300ms"]);
    let c = client();
    let t = Instant::now();
    assert_eq!(c.get(app.url("/")).send().expect("get /").status(), 200);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "took only {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    assert_eq!(
        c.get(app.url("/health")).send().expect("health").status(),
        200
    );
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "health took {:?}",
        t.elapsed()
    );
}

#[test]
fn startup_delay_opens_the_port_late() {
    let t = Instant::now();
    let app = DemoApp::start(&["--startup-delay", "700ms"]);
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "listened after only {:?}",
        t.elapsed()
    );
    assert_eq!(
        client()
            .get(app.url("/health"))
            .send()
            .expect("health")
            .status(),
        200
    );
}

#[test]
fn crash_after_exits_abruptly() {
    let mut app = DemoApp::start(&["--crash-after", "300ms"]);
    let status = app.wait_exit();
    assert_eq!(status.code(), Some(70));
}

#[test]
fn exit_on_start_never_listens() {
    let out = DemoApp::command(&["--exit-on-start"], &[])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "printed {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let mut app = DemoApp::start(&["--latency", "800ms"]);
    let url = app.url("/");
    let inflight = std::thread::spawn(move || {
        client()
            .get(url)
            .send()
            .map(|r| (r.status().as_u16(), r.text()))
    });
    // Wait until the request is surely in the server: the accept happened once a probe of /health passes.
    wait_for("the server to answer", || {
        client().get(app.url("/health")).send().ok()
    });
    std::thread::sleep(Duration::from_millis(100));
    app.signal(libc::SIGTERM);
    let (status, body) = inflight
        .join()
        .expect("join")
        .expect("in-flight request completed");
    assert_eq!(status, 200);
    assert_eq!(body.expect("body"), "Hi");
    assert_eq!(app.wait_exit().code(), Some(0));
    assert!(
        std::net::TcpStream::connect(app.addr).is_err(),
        "still accepting after shutdown"
    );
}

#[test]
fn sigint_with_nothing_in_flight_exits_zero_at_once() {
    let mut app = DemoApp::start(&[]);
    let t = Instant::now();
    app.signal(libc::SIGINT);
    assert_eq!(app.wait_exit().code(), Some(0));
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn shutdown_timeout_bounds_the_drain() {
    let mut app = DemoApp::start(&["--latency", "30s", "--shutdown-timeout", "300ms"]);
    let url = app.url("/");
    let _inflight = std::thread::spawn(move || client().get(url).send().map(|r| r.status()));
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    app.signal(libc::SIGTERM);
    let status = app.wait_exit();
    assert_eq!(status.code(), Some(1), "a cut request is not a clean exit");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
}

mod add_public_key {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    struct Fixture {
        app: DemoApp,
        _dir: tempfile::TempDir,
        file: std::path::PathBuf,
        original: Vec<u8>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("authorized_keys");
        let original = format!("{KEY_B}\n").into_bytes();
        std::fs::write(&file, &original).expect("seed");
        let path = file.to_str().expect("utf-8 path").to_owned();
        let app = DemoApp::start_with_env(
            &["--authorized-keys", &path, "--admin-user", "ops"],
            &[("ADMIN_PASSWORD", "correct horse")],
        );
        Fixture {
            app,
            _dir: dir,
            file,
            original,
        }
    }

    fn post(
        f: &Fixture,
        auth: Option<(&str, &str)>,
        body: impl Into<reqwest::blocking::Body>,
    ) -> reqwest::blocking::Response {
        let mut req = client()
            .post(f.app.url("/add_public_key"))
            .header("content-type", "application/json")
            .body(body);
        if let Some((user, password)) = auth {
            req = req.basic_auth(user, Some(password));
        }
        req.send().expect("post")
    }

    fn json_key(line: &str) -> String {
        serde_json::json!({ "ssh_public_key": b64(line) }).to_string()
    }

    const GOOD: Option<(&str, &str)> = Some(("ops", "correct horse"));

    fn assert_rejected(f: &Fixture, resp: reqwest::blocking::Response, status: u16, needle: &str) {
        assert_eq!(resp.status().as_u16(), status);
        let body = resp.text().expect("body");
        assert!(
            body.contains(needle),
            "body {body:?} does not mention {needle:?}"
        );
        assert_eq!(
            std::fs::read(&f.file).expect("read"),
            f.original,
            "a rejected request changed the file"
        );
    }

    #[test]
    fn is_off_without_a_password() {
        let app = DemoApp::start(&[]);
        let resp = client()
            .post(app.url("/add_public_key"))
            .body(json_key(KEY))
            .send()
            .expect("post");
        assert_eq!(resp.status(), 404);
    }

    #[test]
    fn an_empty_password_means_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("authorized_keys");
        let path = file.to_str().expect("utf-8 path").to_owned();
        let app = DemoApp::start_with_env(
            &["--authorized-keys", &path, "--admin-user", "ops"],
            &[("ADMIN_PASSWORD", "")],
        );
        let resp = client()
            .post(app.url("/add_public_key"))
            .header("content-type", "application/json")
            .basic_auth("ops", Some(""))
            .body(json_key(KEY))
            .send()
            .expect("post");
        assert_eq!(resp.status(), 404);
        assert!(!file.exists());
    }

    #[test]
    fn only_json_is_accepted_so_a_cross_site_form_cannot_post() {
        let f = fixture();
        for content_type in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            None,
        ] {
            let mut req = client()
                .post(f.app.url("/add_public_key"))
                .basic_auth("ops", Some("correct horse"))
                .body(json_key(KEY));
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            let resp = req.send().expect("post");
            assert_rejected(&f, resp, 415, "application/json");
        }
        let resp = client()
            .post(f.app.url("/add_public_key"))
            .header("content-type", "Application/JSON; charset=utf-8")
            .basic_auth("ops", Some("correct horse"))
            .body(json_key(KEY))
            .send()
            .expect("post");
        assert_eq!(resp.status(), 201);
    }

    #[test]
    fn wrong_or_missing_credentials_get_401_with_a_challenge() {
        let f = fixture();
        for auth in [
            None,
            Some(("ops", "wrong")),
            Some(("root", "correct horse")),
        ] {
            let resp = post(&f, auth, json_key(KEY));
            assert!(resp
                .headers()
                .get("www-authenticate")
                .is_some_and(|v| v.to_str().unwrap_or("").starts_with("Basic")));
            assert_rejected(&f, resp, 401, "credentials");
        }
    }

    #[test]
    fn malformed_keys_get_400_naming_the_problem() {
        let f = fixture();
        let cases: Vec<(String, &str)> = vec![
            (r#"{"ssh_public_key": "%%% not base64 %%%"}"#.into(), "base64"),
            (json_key(&format!("{KEY}\n{KEY_B}")), "exactly one"),
            (json_key(&format!("command=\"/bin/sh\" {KEY}")), "options"),
            (json_key(&format!("from=\"10.0.0.0/8\" {KEY}")), "options"),
            (json_key(&KEY.replacen(' ', "\n", 1)), "newline"),
            (json_key("ssh-foo AAAAC3NzaC1lZDI1NTE5AAAAIIVYoSgXvLEJbYNnfHdViZNZU2l4eKYBHj+qfFYhp0EV x"), "unknown algorithm"),
            (json_key("ssh-ed25519 AAAAtruncated"), "not a valid OpenSSH public key"),
            (r#"{"ssh_public_key": 5}"#.into(), "JSON"),
            ("not json".into(), "JSON"),
            (r#"{"key": "x"}"#.into(), "JSON"),
        ];
        for (body, needle) in cases {
            let resp = post(&f, GOOD, body.clone());
            assert_eq!(resp.status().as_u16(), 400, "for body {body:?}");
            assert_rejected(&f, resp, 400, needle);
        }
    }

    #[test]
    fn an_oversized_body_gets_413() {
        let f = fixture();
        let big = format!("{{\"ssh_public_key\": \"{}\"}}", "A".repeat(20 * 1024));
        assert_rejected(&f, post(&f, GOOD, big), 413, "larger than");
    }

    #[test]
    fn a_valid_key_is_saved_once() {
        let f = fixture();
        let resp = post(&f, GOOD, json_key(&format!("{KEY}\n")));
        assert_eq!(resp.status(), 201);
        assert_eq!(
            resp.text().expect("body"),
            format!("Key successfully saved:\n{KEY}")
        );
        let again = post(&f, GOOD, json_key(KEY));
        assert_eq!(again.status(), 200);
        let text = std::fs::read_to_string(&f.file).expect("read");
        assert_eq!(text, format!("{KEY_B}\n{KEY}\n"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&f.file)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(
            mode & 0o022,
            0,
            "authorized_keys must not be group/world writable"
        );
    }
}
