#!/usr/bin/env python3
"""Backlog drain benchmark (issue 7): N real WAL segments waiting as .ready files are
archived the way PostgreSQL's archiver calls archive_command (one call per file, in name
order, .ready renamed to .done on success), by each tool in turn, in one run on this machine.

Tools: cp + fsync (storage floor), zstd -1, wal-push with WALVAULT_PUSH_PARALLEL=1 and 2,
pgBackRest archive-push sync and async (process-max 2), all into local directories.
Two corpora of real WAL: pgbench, and an OLTP mix (random text, jsonb, several indexes,
updates and deletes). Prints seg/s, CPU s/seg (the archiver's children), and the ratio.

Usage: scripts/bench-drain.py [SEGMENTS]   (run by scripts/bench.sh, which builds release)
"""
import os, pwd, resource, shutil, subprocess, sys, tempfile, time

SEGMENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 48
PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
BIN = os.environ["WALVAULT_BIN"]
ROOT = os.geteuid() == 0
PG = pwd.getpwnam("postgres") if ROOT else None


def as_pg(cmd, **kw):
    if ROOT:
        kw.setdefault("user", PG.pw_uid)
        kw.setdefault("group", PG.pw_gid)
    return subprocess.run(cmd, check=True, **kw)


def chown(path):
    if ROOT and os.path.isfile(path):
        os.chown(path, PG.pw_uid, PG.pw_gid)
    elif ROOT:
        for d, dirs, files in os.walk(path):
            os.chown(d, PG.pw_uid, PG.pw_gid)
            for f in files:
                os.chown(os.path.join(d, f), PG.pw_uid, PG.pw_gid)


OLTP = """
CREATE TABLE IF NOT EXISTS orders(id bigserial primary key, customer int, note text, doc jsonb, at timestamptz default now());
CREATE INDEX IF NOT EXISTS orders_customer ON orders(customer);
CREATE INDEX IF NOT EXISTS orders_note ON orders(note);
CREATE INDEX IF NOT EXISTS orders_doc ON orders USING gin(doc);
INSERT INTO orders(customer, note, doc)
  SELECT (random()*100000)::int, md5(random()::text) || ' ' || md5(random()::text),
         jsonb_build_object('sku', md5(random()::text), 'qty', (random()*10)::int, 'tags', jsonb_build_array(md5(random()::text), (random()*1000)::int))
  FROM generate_series(1, 20000);
UPDATE orders SET note = md5(random()::text) WHERE id % 7 = (random()*6)::int;
DELETE FROM orders WHERE id % 53 = (random()*52)::int;
"""


def make_corpus(work, kind):
    """A stopped cluster whose pg_wal holds SEGMENTS completed segments of `kind` WAL."""
    pgdata = os.path.join(work, f"pg-{kind}")
    as_pg([f"{PG_BIN}/initdb", "-D", pgdata, "-U", "postgres", "--auth=trust", "--no-sync"], stdout=subprocess.DEVNULL)
    with open(os.path.join(pgdata, "postgresql.conf"), "a") as f:
        f.write(f"listen_addresses = ''\nunix_socket_directories = '{work}'\nport = 54340\n"
                "wal_keep_size = 100GB\nmax_wal_size = 100GB\nfsync = off\nfull_page_writes = on\n")
    as_pg([f"{PG_BIN}/pg_ctl", "-D", pgdata, "-l", os.path.join(work, f"{kind}.log"), "-w", "start"], stdout=subprocess.DEVNULL)
    psql = [f"{PG_BIN}/psql", "-X", "-q", "-h", work, "-p", "54340", "-U", "postgres", "-d", "postgres"]
    wal = os.path.join(pgdata, "pg_wal")
    def done():
        return len([n for n in os.listdir(wal) if len(n) == 24]) > SEGMENTS + 2
    if kind == "pgbench":
        as_pg([f"{PG_BIN}/pgbench", "-h", work, "-p", "54340", "-U", "postgres", "-i", "-s", "10", "-q", "postgres"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(400):
        if done():
            break
        if kind == "pgbench":
            as_pg([f"{PG_BIN}/pgbench", "-h", work, "-p", "54340", "-U", "postgres", "-n", "-t", "2000", "-c", "2", "postgres"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            as_pg(psql + ["-c", OLTP], stdout=subprocess.DEVNULL)
    as_pg(psql + ["-c", "SELECT pg_switch_wal()"], stdout=subprocess.DEVNULL)
    as_pg([f"{PG_BIN}/pg_ctl", "-D", pgdata, "-m", "fast", "-w", "stop"], stdout=subprocess.DEVNULL)
    # The first SEGMENTS completed segments are the backlog; later ones stay (the server needs
    # them to start again for pgBackRest's stanza-create).
    segs = sorted(n for n in os.listdir(wal) if len(n) == 24)[:SEGMENTS]
    return pgdata, segs


def set_ready(pgdata, segs):
    status = os.path.join(pgdata, "pg_wal", "archive_status")
    for n in os.listdir(status):
        os.unlink(os.path.join(status, n))
    for s in segs:
        open(os.path.join(status, s + ".ready"), "w").close()
    chown(status)


def drain(pgdata, segs, command, env):
    """Call `command` (with %p, %f) per .ready file as PostgreSQL does; wall and CPU."""
    status = os.path.join(pgdata, "pg_wal", "archive_status")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    for s in segs:
        cmd = command.replace("%p", f"pg_wal/{s}").replace("%f", s)
        kw = dict(cwd=pgdata, env=env, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if ROOT:
            r = subprocess.run(cmd, user=PG.pw_uid, group=PG.pw_gid, **kw)
        else:
            r = subprocess.run(cmd, **kw)
        if r.returncode != 0:
            raise SystemExit(f"{command}: {s}: exit {r.returncode}: {r.stderr.decode()[-500:]}")
        os.rename(os.path.join(status, s + ".ready"), os.path.join(status, s + ".done"))
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def du(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def pgbackrest_conf(work, pgdata, name, asynchronous):
    repo = os.path.join(work, f"repo-{name}")
    spool = os.path.join(work, f"spool-{name}")
    for d in (repo, spool):
        os.makedirs(d, exist_ok=True)
        chown(d)
    conf = os.path.join(work, f"{name}.conf")
    with open(conf, "w") as f:
        f.write(f"[global]\nrepo1-path={repo}\nrepo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=benchmarkbenchmarkbenchmark\n"
                f"compress-type=zst\nlog-level-console=warn\nlog-level-file=off\nlock-path={spool}\nspool-path={spool}\n"
                f"archive-async={'y' if asynchronous else 'n'}\nprocess-max=2\n"
                f"[bench]\npg1-path={pgdata}\npg1-socket-path={work}\npg1-port=54340\n")
    chown(conf)
    return conf, repo


def main():
    work = tempfile.mkdtemp(prefix="walvault-drain-")
    os.chmod(work, 0o755)
    chown(work)
    key = os.path.join(work, "key")
    with open(key, "w") as f:
        f.write(subprocess.run(["openssl", "rand", "-base64", "32"], capture_output=True, text=True).stdout)
    os.chmod(key, 0o600)
    chown(key)
    have_pgbr = shutil.which("pgbackrest") is not None
    print(f"backlog drain: {SEGMENTS} segments per corpus, {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    print(f"{'corpus':8} {'tool':28} {'seg/s':>7} {'CPU s/seg':>10} {'ratio':>6} {'vs cp':>6}")
    try:
        for kind in ("pgbench", "oltp"):
            pgdata, segs = make_corpus(work, kind)
            raw = len(segs) * 16 * 1024 * 1024
            tools = [
                ("cp + fsync", "cp %p {r}/%f && sync {r}/%f", {}),
                ("zstd -1 + fsync", "zstd -1 -q -f %p -o {r}/%f.zst && sync {r}/%f.zst", {}),
                ("wal-push (parallel 1)", f"{BIN}/wal-push %p", {"WALVAULT_PUSH_PARALLEL": "1"}),
                ("wal-push (default, parallel 2)", f"{BIN}/wal-push %p", {"WALVAULT_PUSH_PARALLEL": "2"}),
            ]
            if have_pgbr:
                tools += [("pgBackRest sync zst+aes", "pgbackrest --config={c} --stanza=bench archive-push %p", {"pgbr": "n"}),
                          ("pgBackRest async pm2 zst+aes", "pgbackrest --config={c} --stanza=bench archive-push %p", {"pgbr": "y"})]
            base = None
            for name, command, extra in tools:
                tag = "".join(ch for ch in name if ch.isalnum())[:20] + kind
                r = os.path.join(work, f"repo-{tag}")
                os.makedirs(r, exist_ok=True)
                chown(r)
                env = dict(os.environ, WALVAULT_REPO=f"file://{r}", WALVAULT_KEY_FILE=key, WALVAULT_LOG="warn",
                           WALVAULT_CACHE_DIR=os.path.join(work, f"cache-{tag}"), WALVAULT_ENV="bench")
                env.update({k: v for k, v in extra.items() if k != "pgbr"})
                if "pgbr" in extra:
                    conf, r = pgbackrest_conf(work, pgdata, tag, extra["pgbr"] == "y")
                    as_pg([f"{PG_BIN}/pg_ctl", "-D", pgdata, "-l", os.path.join(work, "pgbr.log"), "-w", "start"], stdout=subprocess.DEVNULL)
                    as_pg(["pgbackrest", f"--config={conf}", "--stanza=bench", "stanza-create"], stdout=subprocess.DEVNULL)
                    as_pg([f"{PG_BIN}/pg_ctl", "-D", pgdata, "-m", "fast", "-w", "stop"], stdout=subprocess.DEVNULL)
                    command = command.replace("{c}", conf)
                    segs_now = segs
                else:
                    command = command.replace("{r}", r)
                    segs_now = segs
                set_ready(pgdata, segs_now)
                wall, cpu = drain(pgdata, segs_now, command, env)
                rate = len(segs_now) / wall
                base = base or rate
                ratio = raw / max(du(r), 1)
                cpu_s = f"{cpu / len(segs_now):.3f}" if "async" not in name else "n/a*"
                print(f"{kind:8} {name:28} {rate:7.1f} {cpu_s:>10} {ratio:6.1f} {rate / base:6.2f}", flush=True)
    finally:
        subprocess.run(["sh", "-c", f"for d in {work}/pg-*; do {PG_BIN}/pg_ctl -D $d -m immediate stop >/dev/null 2>&1; done"],
                       user=PG.pw_uid if ROOT else None)
        shutil.rmtree(work, ignore_errors=True)
    print("* pgBackRest async pushes from a detached process whose CPU the archiver loop does not see")


if __name__ == "__main__":
    main()
