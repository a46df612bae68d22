//! A repository's objects as someone with access to the bucket sees them: listed, read,
//! written and deleted raw (the local directory directly, S3 through one plain HTTP request
//! to the test server), for the tests that damage or plant objects.

use std::time::Duration;

use super::common::{TestRepo, stderr};

pub fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("json: {e}\n{}\n{}", String::from_utf8_lossy(&out.stdout), stderr(out)))
}

/// Object keys of the repository under `prefix`.
pub fn keys(repo: &TestRepo, prefix: &str) -> Vec<String> {
    let out = repo.run("walvault", &["ls", "--json", prefix]);
    assert!(out.status.success(), "ls: {}", stderr(&out));
    json(&out).as_array().expect("array").iter().map(|o| o["key"].as_str().expect("key").to_string()).collect()
}

/// The key of WAL file `name` (None if absent).
pub fn wal_key(repo: &TestRepo, name: &str) -> Option<String> {
    keys(repo, "wal/").into_iter().find(|k| k.rsplit('/').next().is_some_and(|f| f.starts_with(&format!("{name}."))))
}

pub fn get_raw(repo: &TestRepo, key: &str) -> Vec<u8> {
    let out = repo.run("walvault", &["get", "--raw", key]);
    assert!(out.status.success(), "get {key}: {}", stderr(&out));
    out.stdout
}

/// One plain HTTP request to the S3 test server (it checks no signature, but refuses
/// anonymous writes).
pub fn s3_request(repo: &TestRepo, method: &str, key: &str, body: &[u8]) -> String {
    use std::io::{Read, Write};
    let endpoint = repo.env.iter().find(|(k, _)| k == "AWS_ENDPOINT_URL").map(|(_, v)| v.clone()).expect("endpoint");
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/').to_string();
    let path = repo.url.trim_start_matches("s3://");
    let mut s = std::net::TcpStream::connect(&hostport).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let auth = "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";
    let head = format!(
        "{method} /{path}/{key} HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: {auth}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).and_then(|()| s.write_all(body)).expect("write");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp
}

/// Store `bytes` at `key` as someone with write access to the bucket would.
pub fn put_raw(repo: &TestRepo, key: &str, bytes: &[u8]) {
    match &repo.fs_root {
        Some(root) => {
            let path = root.join(key);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, bytes).expect("write");
        }
        None => assert!(s3_request(repo, "PUT", key, bytes).starts_with("HTTP/1.1 200"), "put {key}"),
    }
}

pub fn delete(repo: &TestRepo, key: &str) {
    match &repo.fs_root {
        Some(root) => std::fs::remove_file(root.join(key)).expect("delete"),
        None => assert!(s3_request(repo, "DELETE", key, b"").starts_with("HTTP/1.1 204"), "delete {key}"),
    }
}
