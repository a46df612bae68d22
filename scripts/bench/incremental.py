"""The `incremental` bench stage (issue 13), run by harness.py: a PostgreSQL 17 pgbench cluster
with summarize_wal = on; a walvault full backup, then incrementals after a workload changing
about 1% of the relation pages, about 10%, pgbench's own random workload for 60 s, and three
more small ones (a chain of full + 6); for each, bytes read from PGDATA, bytes stored, wall and
CPU beside `pg_basebackup --incremental` (pgBackRest `incr` is not measured yet: Debian's 2.45
does not support PostgreSQL 17; the JSON says so); then a restore of the full backup against the restore of the whole chain.
"""
import json
import os
import re
import shutil
import subprocess
import time

PG17_CANDIDATES = ["/var/cache/walvault/pg/17/bin", "/usr/lib/postgresql/17/bin"]


def pg17_bin():
    for d in [os.environ.get("BENCH_PG17_BIN", "")] + PG17_CANDIDATES:
        if d and os.path.exists(os.path.join(d, "initdb")):
            return d
    raise RuntimeError("PostgreSQL 17 binaries not found (scripts/pg-binaries.sh fills /var/cache/walvault/pg)")


def pgbackrest_supports(major):
    """pgBackRest supports PostgreSQL 17 from 2.53 on."""
    if not shutil.which("pgbackrest"):
        return False, "pgbackrest is not installed"
    out = subprocess.run(["pgbackrest", "version"], capture_output=True, text=True).stdout
    m = re.search(r"(\d+)\.(\d+)", out)
    ver = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    if major >= 17 and ver < (2, 53):
        return False, f"{out.strip()} does not support PostgreSQL {major} (2.53 and newer do)"
    return True, out.strip()


def wait_summarized(c, timeout=300):
    """Wait until the WAL summarizer has summarized up to the last checkpoint's redo point;
    returns the seconds waited. It reads WAL lazily (it sleeps up to 30 s when idle and a
    checkpoint wakes it): after a burst such as a workload it is still reading the burst's WAL
    when the checkpoint ends, and whichever tool started the next incremental first would
    wait for it (both wait for the summaries to reach their start), the other not."""
    redo = c.psql("SELECT redo_lsn FROM pg_control_checkpoint()", capture=True)
    t0 = time.perf_counter()
    while c.psql(f"SELECT summarized_lsn >= '{redo}'::pg_lsn FROM pg_get_wal_summarizer_state()", capture=True) != "t":
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"the WAL summarizer did not reach {redo} within {timeout} s")
        time.sleep(0.05)
    return time.perf_counter() - t0


PHASES = re.compile(r"phases \(ms\):(.*)")


def phases(stderr):
    """base-backup's phase breakdown ({name: ms}) from its `phases (ms): a 3, b 40, total 50` line."""
    m = None
    for m in PHASES.finditer(stderr):
        pass
    if not m:
        return None
    out = {}
    for item in m.group(1).split(","):
        name, _, ms = item.strip().rpartition(" ")
        if name and ms.isdigit():
            out[name] = int(ms)
    return out


def run(ctx, h):
    old = h.PG_BIN
    h.PG_BIN = pg17_bin()
    try:
        res = _run(ctx, h, h.PG_BIN)
    finally:
        h.PG_BIN = old
    # The harness's PG_BIN is PostgreSQL 15 (Debian's), which pgBackRest 2.45 supports.
    ok, note = pgbackrest_supports(15)
    if ok:
        res["pgbackrest_pg15"] = pgbackrest_leg(ctx, h)
    else:
        res["pgbackrest_pg15"] = {"skipped": note}
    return res


def pgbackrest_leg(ctx, h):
    """PostgreSQL 15 (which pgBackRest 2.45 supports; no WAL summaries, so walvault compares
    by content): the same ~1% and ~10% workloads, walvault --type incr against pgBackRest
    --type=incr (process-max 2, zst + aes-256-cbc), bytes stored and time."""
    w = ctx.work
    c = h.Cluster(w, "incr15", 54345, "wal_level = replica\narchive_mode = on\nmax_wal_size = 4GB\n")
    c.init()
    repo = h.mkdir_pg(os.path.join(w, "incr15-repo"))
    env = h.walvault_env(w, repo, ctx.key, {"PGHOST": w, "PGPORT": str(c.port), "PGUSER": "postgres",
                                           "PGDATABASE": "postgres", "PGDATA": c.pgdata})
    wconf = os.path.join(w, "incr15-walvault.conf")
    with open(wconf, "w") as f:
        f.write(f"WALVAULT_REPO=file://{repo}\nWALVAULT_KEY_FILE={ctx.key}\nWALVAULT_ENV=bench\n"
                f"WALVAULT_CACHE_DIR={env['WALVAULT_CACHE_DIR']}\n")
    h.chown(wconf)
    conf, pgbr_repo = h.pgbackrest_conf(w, c.pgdata, c.port, "incr15", False)
    with open(os.path.join(c.pgdata, "postgresql.conf"), "a") as f:
        f.write(f"archive_command = 'WALVAULT_CONFIG={wconf} WALVAULT_LOG=warn {h.BIN}/wal-push %p && "
                f"pgbackrest --config={conf} --stanza=bench archive-push %p'\n")
    scale = 10 if ctx.quick else 270
    spool = h.mkdir_pg(os.path.join(w, "incr15-spool"))
    rows = []
    c.start()
    try:
        h.as_pg(["pgbackrest", f"--config={conf}", "--stanza=bench", "stanza-create"], timeout=120)
        c.pgbench("-i", "-s", str(scale), "-q")
        c.psql("CHECKPOINT")
        backups = os.path.join(pgbr_repo, "backup")
        for label, sql, kind in [("full", None, "full"),
                                 ("about 1% of pages", "((aid - 1) / 61) % 400 = 7", "incr"),
                                 ("about 10% of pages", "((aid - 1) / 61) % 40 = 3", "incr")]:
            if sql:
                c.psql(f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE {sql}")
            r = h.checked(h.measure([f"{h.BIN}/base-backup", "--json", "--checkpoint", "fast", "--type", kind, "--spool-dir", spool], env=env, cwd=w,
                                    timeout=7200, capture=True), f"base-backup {label}")
            j = json.loads(r["stdout"])
            rows.append({"workload": label, "tool": f"walvault --type {kind}", "wall_s": r["wall_s"], "cpu_s": r["cpu_s"],
                         "read_bytes": j.get("read_bytes", j["bytes"]), "stored_bytes": j["stored_bytes"],
                         "block_source": j.get("block_source")})
            before = h.du(backups)
            r = h.checked(h.measure(["pgbackrest", f"--config={conf}", "--stanza=bench", f"--type={kind}", "backup"], cwd=w,
                                    timeout=7200), f"pgbackrest {label}")
            rows.append({"workload": label, "tool": f"pgBackRest --type={kind} (process-max 2)", "wall_s": r["wall_s"],
                         "cpu_s": r["cpu_s"], "stored_bytes": h.du(backups) - before})
            h.log(f"incremental pg15 {label}: walvault {rows[-2]['stored_bytes'] / 1e6:.2f} MB, "
                  f"pgBackRest {rows[-1]['stored_bytes'] / 1e6:.2f} MB")
    finally:
        c.stop("immediate")
        shutil.rmtree(c.pgdata, ignore_errors=True)
    return {"pg": "15", "scale": scale, "rows": rows}


def _run(ctx, h, pgbin):
    w = ctx.work
    c = h.Cluster(w, "incr", 54344, "wal_level = replica\narchive_mode = on\nmax_wal_size = 4GB\nsummarize_wal = on\n")
    c.init()
    repo = h.mkdir_pg(os.path.join(w, "incr-repo"))
    env = h.walvault_env(w, repo, ctx.key, {"PGHOST": w, "PGPORT": str(c.port), "PGUSER": "postgres",
                                           "PGDATABASE": "postgres", "PGDATA": c.pgdata,
                                           "WALVAULT_LOG": "warn,walvault::ops::repo::phases=info"})
    wconf = os.path.join(w, "incr-walvault.conf")
    with open(wconf, "w") as f:
        f.write(f"WALVAULT_REPO=file://{repo}\nWALVAULT_KEY_FILE={ctx.key}\nWALVAULT_ENV=bench\n"
                f"WALVAULT_CACHE_DIR={env['WALVAULT_CACHE_DIR']}\n")
    h.chown(wconf)
    with open(os.path.join(c.pgdata, "postgresql.conf"), "a") as f:
        f.write(f"archive_command = 'WALVAULT_CONFIG={wconf} WALVAULT_LOG=warn {h.BIN}/wal-push %p'\n")
    pgbr_ok, pgbr_note = pgbackrest_supports(17)
    scale = 10 if ctx.quick else 270
    spool = h.mkdir_pg(os.path.join(w, "incr-spool"))
    rows, restores = [], []
    c.start()
    try:
        c.pgbench("-i", "-s", str(scale), "-q")
        c.psql("CHECKPOINT")
        wait_summarized(c)
        pages = int(c.psql("SELECT (sum(pg_relation_size(c.oid, f)) / 8192)::int8 FROM pg_class c, "
                           "unnest(array['main','fsm','vm']) f WHERE c.relkind IN ('r','i','t','m')", capture=True))
        size = int(c.psql("SELECT sum(pg_database_size(oid)) FROM pg_database", capture=True))
        h.log(f"incremental: cluster of {size / 1e6:.0f} MB, {pages} relation pages")
        pgb_prev = None

        def backup(kind, label):
            nonlocal pgb_prev
            r = h.checked(h.measure([f"{h.BIN}/base-backup", "--json", "--checkpoint", "fast", "--type", kind, "--spool-dir", spool], env=env, cwd=w,
                                    timeout=7200, capture=True), f"base-backup {label}")
            j = json.loads(r["stdout"])
            row = {"workload": label, "tool": f"walvault base-backup --type {kind}", "wall_s": r["wall_s"], "cpu_s": r["cpu_s"],
                   "read_bytes": j.get("read_bytes", j["bytes"]), "changed_bytes": j["bytes"], "stored_bytes": j["stored_bytes"],
                   "block_source": j.get("block_source"), "name": j["name"], "phases_ms": phases(r["stderr"])}
            rows.append(row)
            # pg_basebackup --incremental against its own previous backup (plain format + manifest).
            d = os.path.join(w, f"incr-pgb-{len(rows)}")
            cmd = [f"{pgbin}/pg_basebackup", "-h", w, "-p", str(c.port), "-U", "postgres", "-D", d, "-c", "fast", "-X", "none"]
            if pgb_prev and kind != "full":
                cmd.append(f"--incremental={pgb_prev}/backup_manifest")
            r = h.checked(h.measure(cmd, cwd=w, timeout=7200), "pg_basebackup")
            # PostgreSQL's own choice of changed blocks (INCREMENTAL.* files, other files whole)
            # compressed as walvault compresses (zstd -1): "the changed blocks compressed".
            zst = int(subprocess.run(["sh", "-c", 'tar -C "$1" -cf - . | zstd -1 -T1 -c | wc -c', "sh", d],
                                     check=True, capture_output=True, text=True, timeout=7200).stdout)
            rows.append({"workload": label, "tool": "pg_basebackup" + (" --incremental" if pgb_prev and kind != "full" else ""),
                         "wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "stored_bytes": h.du(d), "zstd_bytes": zst})
            if pgb_prev and pgb_prev != d:
                shutil.rmtree(pgb_prev, ignore_errors=True)
            pgb_prev = d
            h.log(f"incremental {label}: walvault read {row['read_bytes'] / 1e6:.0f} MB, changed {row['changed_bytes'] / 1e6:.1f} MB, "
                  f"stored {row['stored_bytes'] / 1e6:.1f} MB in {row['wall_s']:.1f} s ({row['block_source']})")
            return row

        full = backup("full", "full")
        workloads = [
            ("about 1% of pages", f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE ((aid - 1) / 61) % 400 = 7"),
            ("about 10% of pages", f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE ((aid - 1) / 61) % 40 = 3"),
            ("pgbench 60 s", None),
            ("about 1% of pages (2)", f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE ((aid - 1) / 61) % 400 = 17"),
            ("about 1% of pages (3)", f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE ((aid - 1) / 61) % 400 = 27"),
            ("about 1% of pages (4)", f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE ((aid - 1) / 61) % 400 = 37"),
        ]
        for label, sql in workloads:
            if sql:
                c.psql(sql)
            else:
                c.pgbench("-n", "-T", "10" if ctx.quick else "60", "-c", "2")
            # As before the full backup: the workload's dirty pages are flushed by a checkpoint
            # of their own, so neither tool pays for them (the first to start a backup would).
            c.psql("CHECKPOINT")
            # ... and summarized (see wait_summarized): both tools start on the same state.
            catchup = wait_summarized(c)
            row = backup("incr", label)
            row["changed_page_fraction"] = row["changed_bytes"] / (pages * 8192)
            row["summarizer_catchup_s"] = catchup
        last = rows[-2]["name"]
        c.psql("SELECT pg_switch_wal()")
        for label, name in [("full backup", full["name"]), ("full + 6 incrementals", last)]:
            d = h.mkdir_pg(os.path.join(w, "incr-restore"))
            r = h.checked(h.measure([f"{h.BIN}/pitr-prepare", "--json", "--pgdata", d, "--backup", name, "--immediate"], env=env,
                                    cwd=w, timeout=7200, capture=True), f"pitr-prepare {label}")
            b = int(json.loads(r["stdout"])["bytes"])
            restores.append({"restore": label, "wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "bytes": b, "mb_per_s": b / 1e6 / r["wall_s"]})
            h.log(f"incremental restore {label}: {b / 1e6 / r['wall_s']:.0f} MB/s")
            shutil.rmtree(d, ignore_errors=True)
    finally:
        c.stop("immediate")
        shutil.rmtree(c.pgdata, ignore_errors=True)
        for d in os.listdir(w):
            if d.startswith("incr-pgb-"):
                shutil.rmtree(os.path.join(w, d), ignore_errors=True)
    return {"pg": "17", "scale": scale, "cluster_bytes": size, "relation_pages": pages, "rows": rows, "restores": restores,
            "pgbackrest": f"skipped: {pgbr_note}" if not pgbr_ok else f"not measured by this stage yet ({pgbr_note})"}
