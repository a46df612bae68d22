use std::os::unix::fs::PermissionsExt;

use super::*;

fn time(s: &str) -> String {
    match parse_target_time(s) {
        Ok(t) => t.to_rfc3339(),
        Err(e) => format!("error: {e}"),
    }
}

#[test]
fn target_time_accepts_every_operator_form() {
    for (input, want) in [
        ("2024-01-15 10:30:00", "2024-01-15T10:30:00+00:00"),
        ("2024-01-15 10:30:00.123", "2024-01-15T10:30:00.123+00:00"),
        ("2024-01-15 10:30:00.123456", "2024-01-15T10:30:00.123456+00:00"),
        ("2024-01-15 10:30:00+02", "2024-01-15T10:30:00+02:00"),
        ("2024-01-15 10:30:00+02:00", "2024-01-15T10:30:00+02:00"),
        ("2024-01-15 10:30:00+0530", "2024-01-15T10:30:00+05:30"),
        ("2024-01-15 10:30:00-05", "2024-01-15T10:30:00-05:00"),
        ("2024-01-15 10:30:00 +02:00", "2024-01-15T10:30:00+02:00"),
        ("2024-01-15 10:30:00 UTC", "2024-01-15T10:30:00+00:00"),
        ("2024-01-15 10:30:00 utc", "2024-01-15T10:30:00+00:00"),
        ("2024-01-15 10:30:00 GMT", "2024-01-15T10:30:00+00:00"),
        ("2024-01-15 10:30:00Z", "2024-01-15T10:30:00+00:00"),
        ("2024-01-15T10:30:00Z", "2024-01-15T10:30:00+00:00"),
        ("2024-01-15T10:30:00.5+01:00", "2024-01-15T10:30:00.500+01:00"),
        ("2024-01-15 10:30", "2024-01-15T10:30:00+00:00"),
        ("2024-01-15", "2024-01-15T00:00:00+00:00"),
        ("  2024-01-15 10:30:00  ", "2024-01-15T10:30:00+00:00"),
    ] {
        assert_eq!(time(input), want, "{input}");
    }
}

#[test]
fn target_time_refuses_bad_forms_naming_the_setting() {
    for bad in [
        "",
        "yesterday",
        "now",
        "2024-13-01 10:00:00",
        "2024-02-30 10:00:00",
        "2024-01-15 25:00:00",
        "2024-01-15 10:61:00",
        "2024-01-15 10:30:00.",
        "2024-01-15 10:30:00.1234567890",
        "2024-01-15 10",
        "2024-01-15 10:30:00+2",
        "2024-01-15 10:30:00+02:0",
        "2024-01-15 10:30:00+16",
        "2024-01-15 10:30:00 Europe/Berlin",
        "2024-01-15 10:30:00 junk",
        "15/01/2024 10:30",
    ] {
        assert_eq!(
            time(bad),
            format!(
                "error: setting --target-time: {:?} is not a time: use 2024-01-15 10:30:00 with optional \
                 .fraction and offset (+02, +02:00, UTC, Z), or RFC 3339",
                bad
            ),
            "{bad}"
        );
    }
}

fn settings(target: RecoveryTarget) -> RecoverySettings {
    RecoverySettings {
        restore_command: "wal-fetch %f %p".into(),
        target,
        action: TargetAction::Promote,
        timeline: None,
        archive: true,
    }
}

fn body(rendered: &str) -> Vec<&str> {
    let lines: Vec<&str> = rendered.lines().collect();
    assert_eq!(lines.first(), Some(&BEGIN_MARKER));
    assert_eq!(lines.last(), Some(&END_MARKER));
    lines[1..lines.len() - 1].to_vec()
}

#[test]
fn render_time_target_with_explicit_offset() {
    let t = parse_target_time("2024-01-15 10:30:00").unwrap_or_else(|e| panic!("{e}"));
    let text = render(&settings(RecoveryTarget::Time(t)));
    assert!(text.ends_with('\n'));
    assert_eq!(
        body(&text),
        [
            "restore_command = 'wal-fetch %f %p'",
            "recovery_target = ''",
            "recovery_target_lsn = ''",
            "recovery_target_name = ''",
            "recovery_target_xid = ''",
            "recovery_target_time = '2024-01-15 10:30:00+00:00'",
            "recovery_target_inclusive = 'on'",
            "recovery_target_action = 'promote'",
            "recovery_target_timeline = 'latest'",
        ]
    );
    let t = parse_target_time("2024-01-15 10:30:00.25-03:30").unwrap_or_else(|e| panic!("{e}"));
    let text = render(&settings(RecoveryTarget::Time(t)));
    assert!(text.contains("\nrecovery_target_time = '2024-01-15 10:30:00.250-03:30'\n"), "{text}");
}

#[test]
fn render_each_target_kind() {
    let chosen = |t: RecoveryTarget| -> Vec<String> {
        let text = render(&settings(t));
        body(&text)
            .iter()
            .filter(|l| l.starts_with("recovery_target") && !l.ends_with("''"))
            .map(|l| l.to_string())
            .collect()
    };
    let fixed = [
        "recovery_target_inclusive = 'on'",
        "recovery_target_action = 'promote'",
        "recovery_target_timeline = 'latest'",
    ];
    let with = |first: &str| -> Vec<String> { std::iter::once(first).chain(fixed).map(str::to_owned).collect() };
    assert_eq!(chosen(RecoveryTarget::Lsn(Lsn(0x16_B374_D848))), with("recovery_target_lsn = '16/B374D848'"));
    assert_eq!(chosen(RecoveryTarget::Xid(1234)), with("recovery_target_xid = '1234'"));
    assert_eq!(
        chosen(RecoveryTarget::Name("before 'drop'\\x".into())),
        with("recovery_target_name = 'before ''drop''\\\\x'")
    );
    assert_eq!(chosen(RecoveryTarget::Immediate), with("recovery_target = 'immediate'"));
    assert_eq!(chosen(RecoveryTarget::Latest), fixed.map(str::to_owned).to_vec());
    let latest = render(&settings(RecoveryTarget::Latest));
    assert_eq!(latest.matches(" = ''").count(), 5, "every target cleared for latest: {latest}");
    let mut s = settings(RecoveryTarget::Latest);
    s.action = TargetAction::Shutdown;
    s.timeline = Some("3".into());
    s.restore_command = "wal-fetch --config '/etc/w v.conf' %f %p\n".into();
    let text = render(&s);
    assert!(text.contains("\nrestore_command = 'wal-fetch --config ''/etc/w v.conf'' %f %p\\n'\n"), "{text}");
    assert!(text.contains("\nrecovery_target_action = 'shutdown'\nrecovery_target_timeline = '3'\n"), "{text}");
    assert!(!text.contains("archive_mode"), "archiving as configured: {text}");
    s.archive = false;
    let text = render(&s);
    assert!(text.contains("\nrecovery_target_timeline = '3'\narchive_mode = 'off'\n"), "{text}");
}

#[test]
fn write_recovery_replaces_its_own_block_only() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let pgdata = tmp.path();
    let conf = pgdata.join("postgresql.auto.conf");
    fs::write(&conf, "# Do not edit this file manually!\nwork_mem = '64MB'").unwrap_or_else(|e| panic!("{e}"));
    write_recovery(pgdata, &settings(RecoveryTarget::Xid(7))).unwrap_or_else(|e| panic!("{e}"));
    write_recovery(pgdata, &settings(RecoveryTarget::Immediate)).unwrap_or_else(|e| panic!("{e}"));
    let text = fs::read_to_string(&conf).unwrap_or_else(|e| panic!("{e}"));
    let want = format!(
        "# Do not edit this file manually!\nwork_mem = '64MB'\n{}",
        render(&settings(RecoveryTarget::Immediate))
    );
    assert_eq!(text, want);
    for f in ["postgresql.auto.conf", "recovery.signal"] {
        let mode = fs::metadata(pgdata.join(f)).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!(mode, 0o600, "{f}");
    }
    assert!(!pgdata.join("postgresql.auto.conf.walvault").exists());
    let mut bad = settings(RecoveryTarget::Latest);
    bad.timeline = Some("newest".into());
    let err = write_recovery(pgdata, &bad).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(err, "setting --target-timeline: \"newest\" is not latest, current or a timeline id");
}

#[test]
fn strip_block_handles_unterminated_block() {
    let text = format!("a = 1\n{BEGIN_MARKER}\nrestore_command = 'x'\n");
    assert_eq!(strip_block(&text), "a = 1\n");
}

#[test]
fn tablespace_map_rewrite() {
    let map = "16384 /srv/ts1\n16390 /srv/we\\\\ird\\\nname\n";
    let remap = BTreeMap::from([(16390, PathBuf::from("/new/a\\b")), (99, PathBuf::from("/x"))]);
    let out = rewrite_tablespace_map(map, &remap).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out, "16384 /srv/ts1\n16390 /new/a\\\\b\n");
    assert_eq!(rewrite_tablespace_map("", &remap).ok().as_deref(), Some(""));
    let err = rewrite_tablespace_map("nonsense\n", &remap).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(err, "tablespace_map line \"nonsense\" is not <oid> <path>");
}

proptest::proptest! {
    /// Whatever instant and offset, the rendered time parses back to the same instant.
    #[test]
    fn rendered_time_parses_back(secs in 0i64..4_102_444_800, micros in 0u32..1_000_000, offset_min in -900i32..=900) {
        let offset = FixedOffset::east_opt(offset_min * 60).unwrap_or_else(|| panic!("offset {offset_min}"));
        let utc = DateTime::from_timestamp(secs, micros * 1000).unwrap_or_else(|| panic!("time {secs}"));
        let t = utc.with_timezone(&offset);
        let text = render(&settings(RecoveryTarget::Time(t)));
        let line = text.lines().find(|l| l.starts_with("recovery_target_time = '2") || l.starts_with("recovery_target_time = '1"));
        let value = line.and_then(|l| l.split('\'').nth(1)).unwrap_or_default();
        proptest::prop_assert_eq!(parse_target_time(value).ok(), Some(t));
    }

    /// Arbitrary text never panics the parser.
    #[test]
    fn parse_target_time_never_panics(s in "\\PC{0,40}") {
        let _ = parse_target_time(&s);
    }
}
