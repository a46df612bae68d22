use super::*;
use crate::codec::crypt::{Key, Keyring};

fn ring(byte: u8) -> Keyring {
    let key = Key::from_bytes([byte; 32]);
    Keyring::new(Some(key), vec![])
}

fn sample() -> Summary {
    let mut s = Summary { version: SUMMARY_VERSION, env: "production".into(), ..Summary::default() };
    let t = |h: u32| DateTime::<Utc>::from_timestamp(1_700_000_000 + i64::from(h), 0).unwrap_or_default();
    s.wal_stored("wal/production/2026/12/01/000000010000000000000005.zst.enc", "000000010000000000000005", t(1), 1);
    s.wal_stored("wal/production/2026/12/01/000000010000000000000003.zst.enc", "000000010000000000000003", t(2), 1);
    s.wal_stored("wal/production/2026/12/02/00000002.history.zst.enc", "00000002.history", t(3), 1);
    s.wal_stored("wal/production/2026/12/02/000000020000000000000006.zst.enc", "000000020000000000000006", t(4), 1);
    s
}

#[test]
fn newest_and_timelines_are_maxima() {
    let s = sample();
    assert_eq!(s.wal.files, 4);
    assert_eq!(s.wal.newest_key.as_deref(), Some("wal/production/2026/12/02/000000020000000000000006.zst.enc"));
    let one = &s.wal.timelines[&1];
    assert_eq!(one.first_segment.as_deref(), Some("000000010000000000000003"));
    assert_eq!(one.last_segment.as_deref(), Some("000000010000000000000005"));
    let two = &s.wal.timelines[&2];
    assert!(two.began_at.is_some() && two.last_segment.as_deref() == Some("000000020000000000000006"));
}

#[test]
fn sealed_summary_checks_and_tampering_is_refused() {
    let keys = ring(7);
    let mut s = sample();
    s.seal(&keys).unwrap_or_else(|e| panic!("{e}"));
    let json = serde_json::to_vec_pretty(&s).unwrap_or_default();
    let back: Summary = serde_json::from_slice(&json).unwrap_or_default();
    assert!(back.check("obj", "production", &keys).is_ok());

    let mut moved = back.clone();
    moved.repository = Some("00".repeat(16));
    assert!(matches!(moved.check("obj", "production", &keys), Err(Error::Corrupt { .. })), "the MAC covers it");

    let mut forged = back.clone();
    forged.wal.newest_archived_at = Some(Utc::now());
    assert!(matches!(forged.check("obj", "production", &keys), Err(Error::Corrupt { .. })));
    let mut stripped = back.clone();
    stripped.mac = None;
    assert!(matches!(stripped.check("obj", "production", &keys), Err(Error::Corrupt { .. })));
    // Another key: not configured, named.
    assert!(matches!(back.check("obj", "production", &ring(8)), Err(Error::Key { .. })));
    assert!(matches!(back.check("obj", "staging", &keys), Err(Error::Corrupt { .. })));
    // No key at all (WALVAULT_ENCRYPTION=none): nothing to check a mac with.
    let mut plain = sample();
    plain.seal(&Keyring::unencrypted()).unwrap_or_else(|e| panic!("{e}"));
    assert!(plain.mac.is_none() && plain.check("obj", "production", &Keyring::unencrypted()).is_ok());
}

#[test]
fn wal_push_writes_the_summary_at_most_once_a_minute_but_at_once_for_a_new_timeline() {
    use crate::config::{Config, Overrides, RawSettings};
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = format!("file://{}", tmp.path().join("repo").display());
    let env = |k: &str| match k {
        "WALVAULT_REPO" => Some(url.clone()),
        "WALVAULT_ENCRYPTION" => Some("none".to_string()),
        _ => None,
    };
    let raw = RawSettings::load_from(None, &Overrides::new(), env).unwrap_or_else(|e| panic!("{e}"));
    let config = Config::from_raw(&raw).unwrap_or_else(|e| panic!("{e}"));
    let cache = tmp.path().join("cache");
    for dir in [&cache, &tmp.path().join("repo")] {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let repo = Repo::open(&config).await.unwrap_or_else(|e| panic!("{e}"));
        let day = Utc::now().date_naive();
        let push = |name: &'static str| {
            let key = repo.layout.wal_key(day, name, ".zst");
            let (repo, cache) = (repo.clone(), cache.clone());
            async move { wal_pushed(&repo, Some(&cache), &key, name).await }
        };
        let files = || async { load(&repo).await.unwrap_or_else(|e| panic!("{e}")).map(|s| s.wal.files) };
        push("000000010000000000000001").await;
        assert_eq!(files().await, Some(1), "the first push writes the summary");
        push("000000010000000000000002").await;
        push("000000010000000000000003").await;
        assert_eq!(files().await, Some(1), "then pushes are only counted in the cache directory");
        push("00000002.history").await;
        let s = load(&repo).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_default();
        assert_eq!(s.wal.files, 4, "a new timeline is written at once, with every push counted");
        assert!(s.wal.timelines[&2].began_at.is_some());
        assert_eq!(s.wal.timelines[&1].last_segment.as_deref(), Some("000000010000000000000001"));
    });
}
