//! The versions flows of tests/versions.rs on a nimbusd whose registry is in PostgreSQL
//! (`--database-url`, a fresh database of a throwaway cluster per test): deploy, invoke, aliases,
//! rollback, deletion, concurrent deploys and deploys killed half-way. Two nodes on one database
//! and one S3 bucket are in tests/many_nodes.rs.

use nimbus_tests::postgres::{database, node_options};
use nimbus_tests::versions;
use nimbus_tests::{Nimbusd, NimbusdOptions};

fn on_postgres() -> NimbusdOptions {
    node_options(&database())
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_restores_the_previous_versions_answers() {
    let mut options = on_postgres();
    options
        .args
        .extend(["--blob-gc-grace-s".into(), "0".into()]);
    let nimbusd = Nimbusd::start_with(options);
    assert!(
        !nimbusd.data_dir.path().join("registry.db").exists(),
        "the registry is in PostgreSQL, not in the data dir"
    );
    versions::rollback_restores_the_previous_answers(&nimbusd).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_deploys_of_one_function_are_all_recorded() {
    let nimbusd = Nimbusd::start_with(on_postgres());
    versions::concurrent_deploys_are_all_recorded(&nimbusd, 6).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_killed_during_the_upload_leaves_no_version() {
    versions::a_deploy_killed_during_the_upload_leaves_no_version(on_postgres()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_killed_during_post_functions_leaves_no_half_version() {
    versions::a_deploy_killed_during_post_functions_leaves_no_half_version(on_postgres()).await;
}
