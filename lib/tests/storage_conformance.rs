//! Storage conformance suite: the same tests over every backend.
//!
//! - `fs::*`: a local directory repository in a temporary directory.
//! - `s3::*`: a real S3 server (moto) at `WALVAULT_TEST_S3_ENDPOINT`, one fresh bucket per
//!   test, credentials from the environment (`AWS_ACCESS_KEY_ID=test`,
//!   `AWS_SECRET_ACCESS_KEY=test`). `scripts/test.sh` starts the server and sets all of it.
//!   Without the endpoint the S3 tests fail (CI never skips silently); `WALVAULT_TEST_SKIP_S3=1`
//!   skips them for a quick local run.
//!
//! Backend-specific tests (fs modes and temp files, S3 error mapping and start-up) follow
//! the shared ones.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use walvault::Error;
use walvault::storage::{RepoLocation, RequestStats, S3Options, Storage};

// ---------------------------------------------------------------------------------------
// Backends

/// A storage under test and what keeps it alive.
struct Backend {
    storage: Storage,
    _dir: Option<tempfile::TempDir>,
}

async fn fs_backend() -> Backend {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("repo");
    let location = RepoLocation::parse(&format!("file://{}", root.display())).expect("location");
    let storage = Storage::open(&location, &S3Options::defaults()).await.expect("open fs");
    // Reads from a missing root are errors by design; make the root exist like a used repo.
    storage.put("walvault-test-marker", Bytes::new()).await.expect("marker");
    storage.delete("walvault-test-marker").await.expect("marker");
    Backend { storage, _dir: Some(dir) }
}

/// The S3 endpoint, `None` when explicitly skipped; panics with instructions otherwise.
fn s3_endpoint() -> Option<String> {
    let endpoint = s3_endpoint_without_credentials()?;
    assert!(
        std::env::var_os("AWS_ACCESS_KEY_ID").is_some() && std::env::var_os("AWS_SECRET_ACCESS_KEY").is_some(),
        "the S3 tests need AWS_ACCESS_KEY_ID=test and AWS_SECRET_ACCESS_KEY=test in the environment \
         (scripts/test.sh sets them)"
    );
    Some(endpoint)
}

fn s3_endpoint_without_credentials() -> Option<String> {
    if std::env::var("WALVAULT_TEST_SKIP_S3").as_deref() == Ok("1") {
        eprintln!("skipping the S3 half: WALVAULT_TEST_SKIP_S3=1");
        return None;
    }
    let Some(endpoint) = std::env::var("WALVAULT_TEST_S3_ENDPOINT").ok().filter(|e| !e.is_empty()) else {
        panic!(
            "WALVAULT_TEST_S3_ENDPOINT is not set: run the S3 conformance tests through scripts/test.sh \
             (it starts a moto server and sets the endpoint and test credentials), \
             or set WALVAULT_TEST_SKIP_S3=1 to skip them in a quick local run"
        );
    };
    Some(endpoint)
}

fn s3_options(endpoint: &str) -> S3Options {
    S3Options {
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint.into()),
        path_style: true,
        max_attempts: 3,
        ..S3Options::defaults()
    }
}

/// A unique, valid bucket name for one test.
fn bucket_name(test: &str) -> String {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let test: String = test.chars().map(|c| if c == '_' { '-' } else { c }).take(30).collect();
    format!("wv-{test}-{}-{nanos:x}-{seq}", std::process::id())
}

/// A storage on a fresh bucket, optionally under a key prefix.
async fn s3_backend_with_prefix(test: &str, prefix: &str) -> Option<Backend> {
    let endpoint = s3_endpoint()?;
    let bucket = bucket_name(test);
    let url = if prefix.is_empty() { format!("s3://{bucket}") } else { format!("s3://{bucket}/{prefix}") };
    let location = RepoLocation::parse(&url).expect("location");
    let storage = Storage::open(&location, &s3_options(&endpoint)).await.expect("open s3");
    let Storage::S3(s3) = &storage else { unreachable!("an s3:// location opens S3") };
    s3.client().create_bucket().bucket(&bucket).send().await.expect("create bucket");
    Some(Backend { storage, _dir: None })
}

async fn s3_backend(test: &str) -> Option<Backend> {
    s3_backend_with_prefix(test, "").await
}

/// Generate one `#[tokio::test]` per backend for each shared test function.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod fs {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let backend = super::fs_backend().await;
                    super::$test(&backend.storage).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(backend) = super::s3_backend(stringify!($test)).await else { return };
                    super::$test(&backend.storage).await;
                }
            )*
        }
    };
}

conformance!(
    round_trip_sizes,
    get_missing_is_not_found,
    head_present_and_missing,
    put_replaces,
    put_if_absent_refuses_second_write,
    put_if_absent_race_has_one_winner,
    list_with_prefix,
    list_with_delimiter,
    list_with_start_after,
    list_paginates_beyond_1000,
    list_excludes_temp_files,
    delete_is_idempotent,
    hostile_keys_are_rejected,
    request_stats_are_counted,
    describe_names_the_object,
    get_prefix_reads_the_start,
);

// ---------------------------------------------------------------------------------------
// Helpers

/// Deterministic, non-repeating-looking bytes.
fn pattern(len: usize, seed: u8) -> Bytes {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

async fn read_all(s: &Storage, key: &str) -> Vec<u8> {
    let mut reader = s.get(key).await.expect("get");
    let mut buf = Vec::new();
    reader.read_to_end(&mut buf).await.expect("read body");
    buf
}

fn keys(objects: &[walvault::storage::ObjectMeta]) -> Vec<&str> {
    objects.iter().map(|o| o.key.as_str()).collect()
}

/// A small tree shaped like the repository layout.
const TREE: &[&str] = &[
    "database/prod/c_prod_20240101_000000_metadata.json",
    "wal/prod/2024/01/01/000000010000000000000001.zst",
    "wal/prod/2024/01/01/000000010000000000000002.zst",
    "wal/prod/2024/01/02/000000010000000000000003.zst",
    "wal/prod/2024/02/01/000000010000000000000004.zst",
    "wal/prodx/2024/01/01/000000010000000000000001.zst",
    "walvault.json",
];

async fn put_tree(s: &Storage) {
    for (i, key) in TREE.iter().enumerate() {
        s.put(key, pattern(10 + i, i as u8)).await.expect("put tree");
    }
}

fn delta(before: &RequestStats, after: &RequestStats) -> RequestStats {
    RequestStats {
        put: after.put - before.put,
        get: after.get - before.get,
        head: after.head - before.head,
        list: after.list - before.list,
        delete: after.delete - before.delete,
    }
}

// ---------------------------------------------------------------------------------------
// Shared tests

async fn round_trip_sizes(s: &Storage) {
    for (len, key) in [(0, "sizes/empty"), (1, "sizes/one"), (5 << 20, "sizes/five-mib")] {
        let body = pattern(len, 7);
        s.put(key, body.clone()).await.expect("put");
        assert_eq!(read_all(s, key).await, body.as_ref(), "streamed body of {key}");
        assert_eq!(s.get_bytes(key).await.expect("get_bytes"), body, "get_bytes of {key}");
        let meta = s.head(key).await.expect("head").expect("present");
        assert_eq!(meta.size, len as u64);
        assert_eq!(meta.key, key);
        assert!(meta.last_modified.is_some());
    }
}

/// `get_prefix` gives the first bytes, all of a shorter object, nothing of an empty one (a
/// truncated object then fails its header check, not the request), and NotFound when absent.
async fn get_prefix_reads_the_start(s: &Storage) {
    let body = pattern(100_000, 3);
    s.put("prefix/long", body.clone()).await.expect("put");
    s.put("prefix/short", body.slice(..10)).await.expect("put");
    s.put("prefix/empty", Bytes::new()).await.expect("put");
    assert_eq!(s.get_prefix("prefix/long", 200).await.expect("long"), body.slice(..200));
    assert_eq!(s.get_prefix("prefix/short", 200).await.expect("short"), body.slice(..10));
    assert_eq!(s.get_prefix("prefix/empty", 200).await.expect("empty"), Bytes::new());
    assert!(matches!(s.get_prefix("prefix/missing", 200).await, Err(Error::NotFound { .. })));
}

async fn get_missing_is_not_found(s: &Storage) {
    for key in ["missing", "no/such/dir/missing"] {
        match s.get(key).await {
            Err(Error::NotFound { what }) => assert_eq!(what, s.describe(key)),
            Err(other) => panic!("get {key}: expected NotFound, got {other}"),
            Ok(_) => panic!("get {key}: expected NotFound, got a body"),
        }
        assert!(matches!(s.get_bytes(key).await, Err(Error::NotFound { .. })));
    }
    // A key below an object is missing too (fs: a file where a directory would be).
    s.put("file", Bytes::from_static(b"x")).await.expect("put");
    assert!(matches!(s.get("file/below").await, Err(Error::NotFound { .. })));
}

async fn head_present_and_missing(s: &Storage) {
    s.put("h/present", Bytes::from_static(b"12345")).await.expect("put");
    let meta = s.head("h/present").await.expect("head").expect("present");
    assert_eq!((meta.key.as_str(), meta.size), ("h/present", 5));
    let age = chrono::Utc::now() - meta.last_modified.expect("time");
    assert!(age.num_seconds().abs() < 300, "last_modified is recent: {age}");
    assert_eq!(s.head("h/missing").await.expect("head"), None);
    // A "directory" is not an object.
    assert_eq!(s.head("h").await.expect("head"), None);
}

async fn put_replaces(s: &Storage) {
    s.put("r/k", Bytes::from_static(b"first")).await.expect("put");
    s.put("r/k", Bytes::from_static(b"second, longer")).await.expect("put again");
    assert_eq!(s.get_bytes("r/k").await.expect("get"), Bytes::from_static(b"second, longer"));
}

async fn put_if_absent_refuses_second_write(s: &Storage) {
    s.put_if_absent("once/k", Bytes::from_static(b"original")).await.expect("first");
    match s.put_if_absent("once/k", Bytes::from_static(b"other")).await {
        Err(Error::AlreadyExists { key }) => assert_eq!(key, "once/k"),
        other => panic!("second put_if_absent: expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(s.get_bytes("once/k").await.expect("get"), Bytes::from_static(b"original"));
}

async fn put_if_absent_race_has_one_winner(s: &Storage) {
    let writers: Vec<_> = (0..16u8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let body = pattern(64 * 1024, i);
                (i, s.put_if_absent("race/k", body).await)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for writer in writers {
        match writer.await.expect("join") {
            (i, Ok(())) => winners.push(i),
            (_, Err(Error::AlreadyExists { .. })) => {}
            (i, Err(e)) => panic!("writer {i}: unexpected error {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one winner, got {winners:?}");
    assert_eq!(s.get_bytes("race/k").await.expect("get"), pattern(64 * 1024, winners[0]));
}

async fn list_with_prefix(s: &Storage) {
    put_tree(s).await;
    let all = s.list("", None, None).await.expect("list all");
    assert_eq!(keys(&all.objects), TREE, "everything, sorted");
    assert!(all.prefixes.is_empty());

    let day = s.list("wal/prod/2024/01/01/", None, None).await.expect("list day");
    assert_eq!(keys(&day.objects), &TREE[1..3]);
    assert_eq!(day.objects[0].size, 11);

    // A string prefix, not a directory: "wal/prod" also matches "wal/prodx/...".
    let prod = s.list("wal/prod", None, None).await.expect("list");
    assert_eq!(keys(&prod.objects), &TREE[1..6]);
    let partial = s.list("wal/prod/2024/0", None, None).await.expect("list");
    assert_eq!(keys(&partial.objects), &TREE[1..5]);
    let file_prefix = s.list("wal/prod/2024/01/01/0000000100000000000000", None, None).await;
    assert_eq!(keys(&file_prefix.expect("list").objects), &TREE[1..3]);

    assert!(s.list("nothing/", None, None).await.expect("list").objects.is_empty());
    assert!(s.list("wal/prod/2024/01/01/x", None, None).await.expect("list").objects.is_empty());
}

async fn list_with_delimiter(s: &Storage) {
    put_tree(s).await;
    let top = s.list("", Some("/"), None).await.expect("list top");
    assert_eq!(keys(&top.objects), ["walvault.json"]);
    assert_eq!(top.prefixes, ["database/", "wal/"]);

    let months = s.list("wal/prod/2024/", Some("/"), None).await.expect("list months");
    assert!(months.objects.is_empty());
    assert_eq!(months.prefixes, ["wal/prod/2024/01/", "wal/prod/2024/02/"]);

    let envs = s.list("wal/pro", Some("/"), None).await.expect("list envs");
    assert_eq!(envs.prefixes, ["wal/prod/", "wal/prodx/"]);

    let days = s.list("wal/prod/2024/01/", Some("/"), None).await.expect("list days");
    assert_eq!(days.prefixes, ["wal/prod/2024/01/01/", "wal/prod/2024/01/02/"]);

    let day = s.list("wal/prod/2024/01/01/", Some("/"), None).await.expect("list day");
    assert_eq!(keys(&day.objects), &TREE[1..3]);
    assert!(day.prefixes.is_empty());

    let database = s.list("database/prod/", Some("/"), None).await.expect("list database");
    assert_eq!(keys(&database.objects), &TREE[0..1]);

    // Any delimiter, not only "/".
    let underscore = s.list("database/prod/", Some("_"), None).await.expect("list by _");
    assert!(underscore.objects.is_empty());
    assert_eq!(underscore.prefixes, ["database/prod/c_"]);
    let dots = s.list("wal/prod/2024/01/01/", Some(".z"), None).await.expect("list by .z");
    assert_eq!(
        dots.prefixes,
        ["wal/prod/2024/01/01/000000010000000000000001.z", "wal/prod/2024/01/01/000000010000000000000002.z"]
    );
}

async fn list_with_start_after(s: &Storage) {
    put_tree(s).await;
    let after = s.list("wal/prod/", None, Some(TREE[1])).await.expect("list");
    assert_eq!(keys(&after.objects), &TREE[2..5], "strictly greater");

    let after_day = s.list("wal/prod/", None, Some("wal/prod/2024/01/01/~")).await.expect("list");
    assert_eq!(keys(&after_day.objects), &TREE[3..5]);

    let before_all = s.list("wal/prod/", None, Some("wal/")).await.expect("list");
    assert_eq!(keys(&before_all.objects), &TREE[1..5]);

    let after_all = s.list("wal/prod/", None, Some("wal/prod/9")).await.expect("list");
    assert!(after_all.objects.is_empty());

    let months = s.list("wal/prod/2024/", Some("/"), Some("wal/prod/2024/01/~")).await;
    assert_eq!(months.expect("list").prefixes, ["wal/prod/2024/02/"]);
}

async fn list_paginates_beyond_1000(s: &Storage) {
    const N: usize = 1100;
    let names: Vec<String> = (0..N).map(|i| format!("many/{i:05}")).collect();
    futures_util::stream::iter(names.iter().cloned())
        .map(|key| {
            let s = s.clone();
            async move { s.put(&key, Bytes::from(key.clone().into_bytes())).await }
        })
        .buffer_unordered(32)
        .for_each(|r| async move { r.expect("put") })
        .await;
    let before = s.stats();
    let listed = s.list("many/", None, None).await.expect("list");
    assert_eq!(keys(&listed.objects), names.iter().map(String::as_str).collect::<Vec<_>>());
    let pages = delta(&before, &s.stats()).list;
    match s {
        Storage::S3(_) => assert_eq!(pages, 2, "1100 keys are two pages of at most 1000"),
        Storage::Fs(_) => assert_eq!(pages, 1),
    }
    let after = s.list("many/", None, Some("many/01049")).await.expect("list after");
    assert_eq!(after.objects.len(), 50);
}

async fn list_excludes_temp_files(s: &Storage) {
    s.put("t/a", Bytes::from_static(b"a")).await.expect("put");
    if let Storage::Fs(fs) = s {
        // What a crashed writer leaves behind.
        let stray = fs.root().join("t/.b.tmp.AbCdEfGh");
        std::fs::write(&stray, b"half").expect("stray temp file");
        std::fs::create_dir_all(fs.root().join("empty/dir")).expect("empty dir");
        std::fs::write(fs.root().join("empty/.c.tmp.12345678"), b"half").expect("stray");
    }
    let listed = s.list("", None, None).await.expect("list");
    assert_eq!(keys(&listed.objects), ["t/a"]);
    let top = s.list("", Some("/"), None).await.expect("list top");
    assert_eq!(top.prefixes, ["t/"], "directories with no objects are no prefixes");
    assert_eq!(s.head("t/.b.tmp.AbCdEfGh").await.ok().flatten(), None);
}

async fn delete_is_idempotent(s: &Storage) {
    s.put("d/e/f", Bytes::from_static(b"x")).await.expect("put");
    s.put("d/keep", Bytes::from_static(b"y")).await.expect("put");
    s.delete("d/e/f").await.expect("delete");
    assert_eq!(s.head("d/e/f").await.expect("head"), None);
    assert!(matches!(s.get("d/e/f").await, Err(Error::NotFound { .. })));
    s.delete("d/e/f").await.expect("delete again");
    s.delete("never/was/here").await.expect("delete missing");
    let listed = s.list("d/", Some("/"), None).await.expect("list");
    assert_eq!(keys(&listed.objects), ["d/keep"]);
    assert!(listed.prefixes.is_empty(), "no prefix left for d/e/: {:?}", listed.prefixes);
    // The key can be created again afterwards.
    s.put_if_absent("d/e/f", Bytes::from_static(b"z")).await.expect("recreate");
}

async fn hostile_keys_are_rejected(s: &Storage) {
    let hostile = [
        "",
        "/etc/passwd",
        "../escape",
        "a/../../escape",
        "a/./b",
        ".",
        "..",
        "a//b",
        "a/",
        "a\\..\\b",
        "nul\0byte",
        "dir/.name.tmp.abcdefgh",
    ];
    let before = s.stats();
    for key in hostile {
        let body = Bytes::from_static(b"evil");
        let is_invalid = |r: Result<(), Error>| matches!(r, Err(Error::Invalid(_)));
        assert!(is_invalid(s.put(key, body.clone()).await), "put {key:?}");
        assert!(is_invalid(s.put_if_absent(key, body).await), "put_if_absent {key:?}");
        assert!(is_invalid(s.get(key).await.map(drop)), "get {key:?}");
        assert!(is_invalid(s.head(key).await.map(drop)), "head {key:?}");
        assert!(is_invalid(s.delete(key).await), "delete {key:?}");
    }
    for prefix in ["/abs", "../", "a/../", "a//", "x\\y", "\0"] {
        assert!(matches!(s.list(prefix, None, None).await, Err(Error::Invalid(_))), "{prefix:?}");
    }
    assert_eq!(delta(&before, &s.stats()), RequestStats::default(), "no request was sent");
    assert!(s.list("", None, None).await.expect("list").objects.is_empty());
    if let Storage::Fs(fs) = s {
        let parent = fs.root().parent().expect("parent");
        assert!(!parent.join("escape").exists() && !parent.join("b").exists());
    }
}

async fn request_stats_are_counted(s: &Storage) {
    let before = s.stats();
    s.put("st/a", Bytes::from_static(b"a")).await.expect("put");
    s.put_if_absent("st/b", Bytes::from_static(b"b")).await.expect("put_if_absent");
    assert!(s.put_if_absent("st/b", Bytes::from_static(b"b")).await.is_err());
    s.get_bytes("st/a").await.expect("get");
    assert!(s.get("st/missing").await.is_err());
    s.head("st/a").await.expect("head");
    s.list("st/", None, None).await.expect("list");
    s.delete("st/a").await.expect("delete");
    let expected = RequestStats { put: 3, get: 2, head: 1, list: 1, delete: 1 };
    assert_eq!(delta(&before, &s.stats()), expected);
    // Clones share the counters.
    s.clone().head("st/b").await.expect("head");
    assert_eq!(delta(&before, &s.stats()).head, 2);
    let json = serde_json::to_string(&expected).expect("json");
    assert_eq!(json, r#"{"put":3,"get":2,"head":1,"list":1,"delete":1}"#);
}

async fn describe_names_the_object(s: &Storage) {
    let name = s.describe("wal/x");
    match s {
        Storage::Fs(fs) => assert_eq!(name, fs.root().join("wal/x").display().to_string()),
        Storage::S3(_) => {
            assert!(name.starts_with("s3://wv-describe-names") && name.ends_with("/wal/x"), "{name}")
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fs only

#[cfg(unix)]
#[tokio::test]
async fn fs_files_0600_dirs_0700() {
    use std::os::unix::fs::PermissionsExt;
    let backend = fs_backend().await;
    let Storage::Fs(fs) = &backend.storage else { unreachable!() };
    backend.storage.put("a/b/c", Bytes::from_static(b"x")).await.expect("put");
    backend.storage.put_if_absent("a/d", Bytes::from_static(b"x")).await.expect("put");
    let mode = |p: &str| std::fs::metadata(fs.root().join(p)).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode("a/b/c"), 0o600);
    assert_eq!(mode("a/d"), 0o600);
    assert_eq!(mode("a/b"), 0o700);
    assert_eq!(mode("a"), 0o700);
    assert_eq!(mode(""), 0o700);
    let leftovers: Vec<_> = std::fs::read_dir(fs.root().join("a"))
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n.to_string_lossy().contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "no temp files left: {leftovers:?}");
}

#[tokio::test]
async fn fs_missing_root_is_a_storage_error_not_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("not-created");
    let location = RepoLocation::Fs { root: root.clone() };
    let s = Storage::open(&location, &S3Options::defaults()).await.expect("open");
    for result in [s.get("k").await.map(drop), s.head("k").await.map(drop), s.list("", None, None).await.map(drop)] {
        match result {
            Err(Error::Storage { permanent: true, reason, .. }) => {
                assert_eq!(reason, "repository directory does not exist")
            }
            other => panic!("expected a permanent storage error, got {other:?}"),
        }
    }
    s.put("k", Bytes::from_static(b"v")).await.expect("the first write creates the root");
    assert_eq!(s.get_bytes("k").await.expect("get"), Bytes::from_static(b"v"));
}

#[tokio::test]
async fn fs_relative_root_is_refused() {
    let location = RepoLocation::Fs { root: "relative/dir".into() };
    let result = Storage::open(&location, &S3Options::defaults()).await;
    assert!(matches!(result, Err(Error::Config { .. })));
}

// ---------------------------------------------------------------------------------------
// S3 only

#[tokio::test]
async fn s3_prefix_is_applied_and_stripped() {
    let Some(backend) = s3_backend_with_prefix("s3_prefix", "some/prefix").await else { return };
    let s = &backend.storage;
    s.put("wal/a", Bytes::from_static(b"a")).await.expect("put");
    assert!(s.describe("wal/a").ends_with("/some/prefix/wal/a"));
    let listed = s.list("", Some("/"), None).await.expect("list");
    assert_eq!(listed.prefixes, ["wal/"]);
    let listed = s.list("wal/", None, Some("wal/")).await.expect("list");
    assert_eq!(keys(&listed.objects), ["wal/a"]);
    let Storage::S3(s3) = s else { unreachable!() };
    let bucket = s.describe("").trim_start_matches("s3://").split('/').next().map(str::to_string);
    let raw = s3.client().list_objects_v2().bucket(bucket.expect("bucket")).send().await;
    let raw_keys: Vec<_> =
        raw.expect("raw list").contents().iter().filter_map(|o| o.key()).map(str::to_string).collect();
    assert_eq!(raw_keys, ["some/prefix/wal/a"]);
}

#[tokio::test]
async fn s3_missing_bucket_is_permanent_not_not_found() {
    let Some(endpoint) = s3_endpoint() else { return };
    let location = RepoLocation::parse("s3://wv-this-bucket-does-not-exist").expect("location");
    let s = Storage::open(&location, &s3_options(&endpoint)).await.expect("open");
    for (op, result) in [
        ("get", s.get("k").await.map(drop)),
        ("list", s.list("", None, None).await.map(drop)),
        ("put", s.put("k", Bytes::new()).await),
    ] {
        match result {
            Err(e @ Error::Storage { permanent: true, .. }) => {
                let text = e.to_string();
                assert!(text.contains("NoSuchBucket"), "{op}: {text}");
                assert!(!text.contains("after"), "{op}: not retried: {text}");
                eprintln!("{op}: {text}");
            }
            other => panic!("{op}: expected a permanent storage error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn s3_unreachable_endpoint_fails_after_retries() {
    if s3_endpoint().is_none() {
        return;
    }
    // A port nobody listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let options = S3Options {
        max_attempts: 2,
        connect_timeout: Duration::from_secs(1),
        attempt_timeout: Duration::from_secs(2),
        operation_timeout: Duration::from_secs(10),
        ..s3_options(&format!("http://127.0.0.1:{port}"))
    };
    let location = RepoLocation::parse("s3://wv-unreachable").expect("location");
    let s = Storage::open(&location, &options).await.expect("open");
    match s.get("k").await.map(drop) {
        Err(e @ Error::Storage { permanent: true, .. }) => {
            let text = e.to_string();
            eprintln!("{text}");
            assert!(text.starts_with("storage get s3://wv-unreachable/k: failed after 2 attempts: "), "{text}");
            assert!(!text.contains("test"), "no credentials in messages: {text}");
            assert!(!text.contains("DispatchFailure("), "no Debug dump: {text}");
        }
        other => panic!("expected a permanent storage error, got {other:?}"),
    }
}

#[tokio::test]
async fn s3_bad_settings_are_config_errors() {
    let location = RepoLocation::parse("s3://wv-settings").expect("location");
    let cases = [
        (S3Options { sse: Some("rot13".into()), ..S3Options::defaults() }, "WALVAULT_S3_SSE"),
        (S3Options { storage_class: Some("CHEAP".into()), ..S3Options::defaults() }, "WALVAULT_S3_STORAGE_CLASS"),
        (S3Options { endpoint: Some("localhost:9000".into()), ..S3Options::defaults() }, "AWS_ENDPOINT_URL"),
        (
            S3Options { sse: Some("AES256".into()), kms_key_id: Some("k".into()), ..S3Options::defaults() },
            "WALVAULT_S3_KMS_KEY_ID",
        ),
    ];
    for (options, setting) in cases {
        match Storage::open(&location, &options).await {
            Err(Error::Config { setting: s, .. }) => assert_eq!(s, setting),
            other => panic!("{setting}: expected a config error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn s3_sse_and_storage_class_are_sent() {
    let endpoint = match s3_endpoint() {
        Some(e) => e,
        None => return,
    };
    let bucket = bucket_name("s3-sse");
    let options =
        S3Options { sse: Some("AES256".into()), storage_class: Some("STANDARD_IA".into()), ..s3_options(&endpoint) };
    let s = Storage::open(&RepoLocation::parse(&format!("s3://{bucket}")).expect("url"), &options).await.expect("open");
    let Storage::S3(s3) = &s else { unreachable!() };
    s3.client().create_bucket().bucket(&bucket).send().await.expect("create bucket");
    s.put_if_absent("k", Bytes::from_static(b"v")).await.expect("put");
    let head = s3.client().head_object().bucket(&bucket).key("k").send().await.expect("head");
    assert_eq!(head.server_side_encryption().map(|e| e.as_str()), Some("AES256"));
    assert_eq!(head.storage_class().map(|c| c.as_str()), Some("STANDARD_IA"));
}

/// Run the ignored test `name` of this binary in a clean environment (no AWS settings but
/// the endpoint, no profile files) plus `env`, and return its stderr.
fn run_child(name: &str, endpoint: &str, env: &[(&str, &str)]) -> String {
    let exe = std::env::current_exe().expect("current exe");
    let output = std::process::Command::new(exe)
        .args(["--ignored", "--exact", name, "--nocapture", "--test-threads=1"])
        .env_clear()
        .env("WALVAULT_TEST_S3_ENDPOINT", endpoint)
        .env("AWS_CONFIG_FILE", "/nonexistent/walvault-test/config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/walvault-test/credentials")
        .env("HOME", "/nonexistent/walvault-test")
        .envs(env.iter().copied())
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    eprintln!("{stderr}");
    assert!(output.status.success(), "{name} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{name} did not run:\n{stdout}");
    stderr
}

/// Start-up cost with env credentials and no `AWS_EC2_METADATA_DISABLED`: prints the timing
/// of [`s3_startup_child`] (no timed assert: the machine is shared; an instance-metadata
/// wait would show up as seconds).
#[tokio::test]
async fn s3_startup_does_not_wait_for_instance_metadata() {
    let Some(endpoint) = s3_endpoint() else { return };
    let creds = [("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")];
    let stderr = run_child("s3_startup_child", &endpoint, &creds);
    assert!(stderr.contains("s3 start-up:"), "{stderr}");
}

/// The child of [`s3_startup_does_not_wait_for_instance_metadata`]; not run on its own.
#[tokio::test]
#[ignore = "run by s3_startup_does_not_wait_for_instance_metadata in a clean environment"]
async fn s3_startup_child() {
    let Some(endpoint) = s3_endpoint() else { return };
    let bucket = bucket_name("startup");
    let location = RepoLocation::parse(&format!("s3://{bucket}")).expect("url");
    // No region anywhere: the fallback must not ask instance metadata either.
    let options = S3Options { region: None, ..s3_options(&endpoint) };
    let start = Instant::now();
    let s = Storage::open(&location, &options).await.expect("open");
    let opened = start.elapsed();
    let first = s.head("k").await;
    let total = start.elapsed();
    // A missing bucket on HEAD is a 404 without a body: None, the request went through.
    assert_eq!(first.expect("head"), None);
    eprintln!(
        "s3 start-up: open {:.1} ms, open + first request {:.1} ms",
        opened.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3
    );
}

/// No credentials anywhere: one clear, permanent error naming the problem.
#[tokio::test]
async fn s3_missing_credentials_is_a_clear_permanent_error() {
    let Some(endpoint) = s3_endpoint() else { return };
    let stderr = run_child("s3_no_credentials_child", &endpoint, &[("AWS_EC2_METADATA_DISABLED", "true")]);
    assert!(stderr.contains("no credentials:"), "{stderr}");
}

/// The child of [`s3_missing_credentials_is_a_clear_permanent_error`].
#[tokio::test]
#[ignore = "run by s3_missing_credentials_is_a_clear_permanent_error in a clean environment"]
async fn s3_no_credentials_child() {
    let Some(endpoint) = s3_endpoint_without_credentials() else { return };
    let location = RepoLocation::parse("s3://wv-no-credentials").expect("url");
    let s = Storage::open(&location, &s3_options(&endpoint)).await.expect("open");
    match s.get("k").await.map(drop) {
        Err(e @ Error::Storage { permanent: true, .. }) => {
            let text = e.to_string();
            eprintln!("no credentials: {text}");
            assert!(text.contains("credentials"), "{text}");
            assert!(!text.contains("Some(") && !text.contains("{ "), "no Debug dump: {text}");
        }
        other => panic!("expected a permanent storage error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// S3 error mapping against a scripted stand-in server (faults moto cannot produce)

/// Answers the i-th request with `script[i]` (the last entry repeats) and counts requests.
async fn scripted_server(script: Vec<(u16, &'static str)>) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let served = count.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let script = script.clone();
            let served = served.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 8192];
                // Headers, then as much body as Content-Length says.
                let body_start = loop {
                    let Ok(n @ 1..) = conn.read(&mut buf).await else { return };
                    request.extend_from_slice(&buf[..n]);
                    if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&request[..body_start]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while request.len() < body_start + length {
                    let Ok(n @ 1..) = conn.read(&mut buf).await else { return };
                    request.extend_from_slice(&buf[..n]);
                }
                let i = served.fetch_add(1, Ordering::SeqCst);
                let (status, body) = script[i.min(script.len() - 1)];
                let response = format!(
                    "HTTP/1.1 {status} Scripted\r\nContent-Type: application/xml\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (endpoint, count)
}

fn s3_error_xml(code: &str, message: &str) -> &'static str {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>r1</RequestId></Error>"
    );
    Box::leak(xml.into_boxed_str())
}

async fn scripted_storage(script: Vec<(u16, &'static str)>) -> Option<(Storage, impl Fn() -> usize)> {
    s3_endpoint()?;
    let (endpoint, count) = scripted_server(script).await;
    let location = RepoLocation::parse("s3://wv-scripted").expect("url");
    let s = Storage::open(&location, &s3_options(&endpoint)).await.expect("open");
    Some((s, move || count.load(std::sync::atomic::Ordering::SeqCst)))
}

#[tokio::test]
async fn s3_server_errors_fail_after_retries() {
    let internal = s3_error_xml("InternalError", "We encountered an internal error");
    let Some((s, requests)) = scripted_storage(vec![(500, internal)]).await else { return };
    match s.get("k").await.map(drop) {
        Err(e @ Error::Storage { permanent: true, .. }) => assert_eq!(
            e.to_string(),
            "storage get s3://wv-scripted/k: failed after 3 attempts: \
             InternalError: We encountered an internal error (HTTP 500)"
        ),
        other => panic!("expected a permanent storage error, got {other:?}"),
    }
    assert_eq!(requests(), 3, "max_attempts = 3");
}

#[tokio::test]
async fn s3_throttling_is_retried_by_the_sdk() {
    let slow_down = s3_error_xml("SlowDown", "Please reduce your request rate.");
    let Some((s, requests)) = scripted_storage(vec![(503, slow_down), (200, "")]).await else {
        return;
    };
    s.put("k", Bytes::from_static(b"v")).await.expect("put after one retry");
    assert_eq!(requests(), 2);
    assert_eq!(s.stats().put, 1, "stats count operations, not attempts");
}

#[tokio::test]
async fn s3_access_denied_is_permanent_and_not_retried() {
    let denied = s3_error_xml("AccessDenied", "Access Denied");
    let Some((s, requests)) = scripted_storage(vec![(403, denied)]).await else { return };
    match s.put("k", Bytes::from_static(b"v")).await {
        Err(e @ Error::Storage { permanent: true, .. }) => {
            assert_eq!(e.to_string(), "storage put s3://wv-scripted/k: AccessDenied: Access Denied (HTTP 403)");
            assert!(e.hint().is_some());
        }
        other => panic!("expected a permanent storage error, got {other:?}"),
    }
    assert_eq!(requests(), 1);
}

#[tokio::test]
async fn s3_conditional_put_conflict_is_retried_and_412_is_already_exists() {
    let conflict = s3_error_xml("ConditionalRequestConflict", "A conflicting operation occurred");
    let Some((s, requests)) = scripted_storage(vec![(409, conflict), (200, "")]).await else {
        return;
    };
    s.put_if_absent("k", Bytes::from_static(b"v")).await.expect("put after a conflict");
    assert_eq!(requests(), 2);

    let failed = s3_error_xml("PreconditionFailed", "At least one of the preconditions failed");
    for (status, body) in [(412, failed), (304, "")] {
        let Some((s, _)) = scripted_storage(vec![(status, body)]).await else { return };
        match s.put_if_absent("k", Bytes::from_static(b"v")).await {
            Err(Error::AlreadyExists { key }) => assert_eq!(key, "k"),
            other => panic!("{status}: expected AlreadyExists, got {other:?}"),
        }
    }
}
