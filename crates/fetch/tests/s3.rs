//! s3 against the AWS emulator (moto server) that `scripts/test` installs: the bucket and objects
//! are made by the test through the SDK, then fetched by the same code that talks to AWS.
#![cfg(feature = "s3")]

use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use cutover_fetch::{fetch_all, Options, Quiet, Status};
use sha2::{Digest, Sha256};

#[tokio::test]
async fn s3_objects_stream_to_disk_verified_and_a_missing_key_fails_alone() {
    let moto = cutover_e2e::moto::Moto::start();
    // The standard chain reads these, as it would on a developer's machine.
    moto.export_env("us-east-1");
    let endpoint = moto.endpoint.clone();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .load()
        .await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket()
        .bucket("releases")
        .send()
        .await
        .expect("bucket");
    let large: Vec<u8> = (0..24 * 1024 * 1024u32)
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    let small = b"#!/bin/sh\necho hello\n".to_vec();
    for (key, body) in [("app/v2/app-v2.tar.gz", &large), ("tools/run.sh", &small)] {
        s3.put_object()
            .bucket("releases")
            .key(key)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .expect("put");
    }
    let sha: String = Sha256::digest(&large)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let urls = vec![
        format!("s3://releases/app/v2/app-v2.tar.gz#sha256={sha}"),
        "s3://releases/nope/missing.bin".to_owned(),
        "s3://releases/tools/run.sh".to_owned(),
    ];
    let out = fetch_all(&urls, dir.path(), &Options::default(), Arc::new(Quiet))
        .await
        .expect("fetch");
    assert_eq!(out[0].status, Status::Ok, "{out:?}");
    assert_eq!(out[0].bytes, large.len() as u64);
    assert!(
        matches!(&out[1].status, Status::NotFound(r) if r.contains("NoSuchKey")),
        "{out:?}"
    );
    assert_eq!(out[1].attempts, 1, "a missing key is not retried");
    assert_eq!(out[2].status, Status::Ok, "{out:?}");
    assert_eq!(
        std::fs::read(dir.path().join("app-v2.tar.gz")).expect("large"),
        large
    );
    assert_eq!(
        std::fs::read(dir.path().join("run.sh")).expect("small"),
        small
    );
    assert!(!dir.path().join("missing.bin").exists());
}
