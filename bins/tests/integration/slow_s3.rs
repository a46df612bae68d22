//! Restores through an S3 that answers every request 30 ms late (the fault proxy delaying every
//! request, as real S3's first-byte latency): a full restore with prefetch and parallel parts,
//! then `--delta` over the recovered directory, both recover every row.

use std::time::Duration;

use super::common::{s3_endpoint, stderr};
use super::faults::proxy::{Fault, Plan, Proxy};
use super::pitr::{base_backup, prepare, primary, recover};
use super::raw::json;

#[test]
fn full_and_delta_restore_through_a_slow_s3() {
    let proxy = Proxy::start(&s3_endpoint(), Plan::clean());
    let repo = super::faults::repo_via(&proxy);
    let mut p = primary(&repo);
    p.pgbench(&["-i", "-s", "1", "-q"]);
    let out = base_backup(&repo, &p, &[]);
    assert!(out.status.success(), "base-backup: {}", stderr(&out));
    p.psql("CREATE TABLE later AS SELECT g FROM generate_series(1, 5000) g");
    for _ in 0..3 {
        p.psql("INSERT INTO later SELECT g FROM generate_series(1, 1000) g");
        p.psql("SELECT pg_switch_wal()");
    }
    p.switch_and_wait_archived(Duration::from_secs(120));
    p.stop();

    proxy.set_plan(Plan::one(15, 1.0, Fault::Delay(Duration::from_millis(30)), &[]));
    let (mut c, out) = prepare(&repo, &["--latest"]);
    assert!(out.status.success(), "pitr-prepare: {}", stderr(&out));
    recover(&mut c, false);
    assert_eq!(c.psql("SELECT count(*) FROM later"), "8000", "{}", c.log());
    assert_eq!(c.psql("SELECT count(*) FROM pgbench_accounts"), "100000");
    c.stop();
    let delayed = proxy.counts().get("delay").copied().unwrap_or(0);
    assert!(delayed > 10, "every request was delayed: {:?}", proxy.counts());

    let out = repo.pitr_prepare(&c.pgdata, &["--delta", "--latest", "--json"]);
    assert!(out.status.success(), "pitr-prepare --delta: {}", stderr(&out));
    let delta = json(&out)["delta"].clone();
    assert!(delta["kept_files"].as_u64().is_some_and(|n| n > 0), "{delta}");
    recover(&mut c, false);
    assert_eq!(c.psql("SELECT count(*) FROM later"), "8000", "{}", c.log());
    c.stop();
}
