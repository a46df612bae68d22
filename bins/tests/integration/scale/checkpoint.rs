//! `base-backup --checkpoint fast|spread`, seen in the server's own log.

use super::super::common::{Backend, TEST_KEY, TestRepo, stderr};
use super::super::pitr::primary;

/// The default is a spread checkpoint (as pg_basebackup's); `--checkpoint fast` asks for an
/// immediate one. The server logs each backup's checkpoint with its flags.
#[test]
fn the_backup_checkpoint_is_spread_unless_fast_is_asked() {
    let repo = TestRepo::new(Backend::Fs, Some(TEST_KEY));
    let p = primary(&repo);
    // Spread checkpoints pace their writes over checkpoint_completion_target of
    // checkpoint_timeout; 0 lets this small cluster's spread checkpoint end at once.
    p.append_conf("log_checkpoints = on\ncheckpoint_completion_target = 0");
    p.psql("SELECT pg_reload_conf()");
    p.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS n");
    let backup = |extra: &[&str]| {
        let mut c = repo.command_as_postgres("base-backup");
        c.env("PGHOST", &p.socket_dir).env("PGPORT", p.port.to_string()).env("PGUSER", "postgres");
        c.env("PGDATA", &p.pgdata).args(extra).output().expect("base-backup")
    };
    let starts = |log: &str| -> Vec<String> {
        log.lines().filter(|l| l.contains("checkpoint starting:")).map(|l| l.to_string()).collect()
    };
    let before = starts(&p.log()).len();
    let out = backup(&[]);
    assert!(out.status.success(), "base-backup: {}", stderr(&out));
    assert!(stderr(&out).contains("waiting for a spread checkpoint"), "{}", stderr(&out));
    let log = starts(&p.log());
    let spread = &log[before..];
    assert_eq!(spread.len(), 1, "one checkpoint: {log:?}");
    assert!(spread[0].contains("force wait") && !spread[0].contains("immediate"), "{spread:?}");

    let out = backup(&["--checkpoint", "fast"]);
    assert!(out.status.success(), "base-backup --checkpoint fast: {}", stderr(&out));
    let log = starts(&p.log());
    let fast = &log[before + 1..];
    assert_eq!(fast.len(), 1, "one checkpoint: {log:?}");
    assert!(fast[0].contains("immediate force wait"), "{fast:?}");

    let out = backup(&["--checkpoint", "soon"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--checkpoint"), "{}", stderr(&out));
}
