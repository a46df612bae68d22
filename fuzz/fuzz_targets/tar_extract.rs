//! Tar extraction from arbitrary bytes into a fresh directory. The manifest is what the tar
//! itself claims for its well-formed entries, so the fuzzer reaches the writing code; the
//! invariant is that nothing is ever written outside the destination, whatever the entries
//! (`..`, absolute paths, links, devices, duplicates, size lies).
#![no_main]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use walvault::manifest::{EntryKind, Manifest, ManifestEntry, path_problem};

/// What the tar claims, for entries whose paths a manifest may hold.
fn claimed_manifest(data: &[u8]) -> Manifest {
    let mut files = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut archive = tar::Archive::new(data);
    let Ok(entries) = archive.entries() else { return Manifest::new(files, Vec::new()) };
    for entry in entries {
        let Ok(mut entry) = entry else { break };
        let Ok(path) = entry.path().map(|p| p.to_string_lossy().trim_end_matches('/').to_string()) else { continue };
        if path_problem(&path).is_some() || !seen.insert(path.clone()) {
            continue;
        }
        let t = entry.header().entry_type();
        let (kind, link_target) = if t.is_dir() {
            (EntryKind::Dir, None)
        } else if t.is_symlink() {
            let target = entry.link_name().ok().flatten().map(|l| l.to_string_lossy().into_owned());
            (EntryKind::Symlink, target)
        } else {
            (EntryKind::File, None)
        };
        let mut body = Vec::new();
        if kind == EntryKind::File && entry.by_ref().take(1 << 20).read_to_end(&mut body).is_err() {
            break;
        }
        let digest = walvault::manifest::digest::of_bytes(&body);
        files.push(ManifestEntry { path, size: body.len() as u64, digest, mode: 0o600, part: 0, kind, link_target });
    }
    let m = Manifest::new(files, Vec::new());
    if m.validate().is_ok() { m } else { Manifest::new(Vec::new(), Vec::new()) }
}

/// Every path under `dir`, not following links.
fn tree(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        out.push(p.clone());
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            tree(&p, out);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let manifest = claimed_manifest(data);
    let root = tempfile::tempdir().expect("tempdir");
    let dest = root.path().join("pgdata");
    std::fs::create_dir(&dest).expect("mkdir");
    let _ = walvault::tarball::extract_tar(data, &dest, &manifest, &BTreeMap::new());
    let mut all = Vec::new();
    tree(root.path(), &mut all);
    for p in &all {
        assert!(p.starts_with(&dest), "written outside the destination: {}", p.display());
        if let Ok(target) = std::fs::read_link(p) {
            let rel = p.strip_prefix(&dest).expect("inside");
            assert!(rel.starts_with("pg_tblspc"), "a link outside pg_tblspc: {} -> {}", p.display(), target.display());
        }
    }
});
