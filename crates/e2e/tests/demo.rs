//! `cutover demo`: the whole story must pass on its own, with zero failed requests.

use cutover_e2e::cutover;

#[test]
fn the_demo_tells_its_story_without_a_failed_request() {
    let (code, out, err) = cutover(&["demo", "--json", "--rate", "200"]);
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON ({e}): {out}\n{err}"));
    assert_eq!(code, 0, "{report}\n{err}");
    assert_eq!(report["passed"], true);
    assert_eq!(report["failed_infra"], 0);
    assert_eq!(report["release_at_end"], "v2");
    let outcomes: Vec<&str> = report["deployments"]
        .as_array()
        .expect("deployments")
        .iter()
        .filter_map(|d| d["outcome"].as_str())
        .collect();
    assert_eq!(
        outcomes,
        vec!["done", "rolled_back", "rolled_back", "done", "done"]
    );
    let failed_app = report["failed_app"].as_u64().unwrap_or(u64::MAX);
    assert!(
        failed_app <= report["app_failures_allowed"].as_u64().unwrap_or(0),
        "{report}"
    );
    assert!(
        report["deployments"][4]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("traffic flip in")),
        "{report}"
    );
    assert!(
        report["versions"]["v1"].as_u64().unwrap_or(0) > 0
            && report["versions"]["v2"].as_u64().unwrap_or(0) > 0
    );
    assert!(
        report["versions"].get("v3").is_none(),
        "the failing v3 never took traffic"
    );
    assert!(report["versions"]["v5"].as_u64().unwrap_or(0) > 0);
}
