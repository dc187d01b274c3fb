//! The throwaway cluster starts, and each call gives a fresh database that accepts connections.

use std::process::Command;

#[test]
fn each_call_gives_a_fresh_database_that_answers() {
    let first = nimbus_test_postgres::database();
    let second = nimbus_test_postgres::database();
    assert_ne!(first, second);
    for url in [&first, &second] {
        let output = Command::new("psql")
            .args([url.as_str(), "-tAc", "SELECT current_database()"])
            .output()
            .expect("running psql");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let name = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(url.ends_with(&name), "{url} vs {name}");
    }
}
