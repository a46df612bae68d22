#!/usr/bin/env python3
"""walvault benchmark harness (issue #7): every stage measures walvault beside its baselines
in one run on this machine and writes raw JSON into docs/benchmarks/STAGE.json, with machine
information (nproc, load average before and after, date, versions).

Stages (in this order; --stages picks some):
  corpora        real WAL from scratch clusters: pgbench, and an OLTP mix (random text,
                 jsonb, several indexes, updates, deletes); used by the stages below
  archive-single one cold call per segment: cp + fsync, zstd -3 | openssl, wal-push,
                 pgBackRest sync archive-push, wal-fetch (wall, CPU, max RSS; medians)
  drain          a backlog of .ready files archived the way PostgreSQL calls archive_command:
                 cp + fsync, zstd -1, wal-push (parallel 1, 2), pgBackRest sync and async
                 (process-max 2, zst + aes-256-cbc); seg/s, CPU s/seg, ratio, the limit
  live           a cluster under the fastest WAL generators with archive_command = wal-push
                 (and pgBackRest async): pg_wal/archive_status/*.ready sampled every 100 ms
  restore        wal-fetch of a prefetched file vs a cold fetch vs cp; then the PITR stage
                 (scripts/bench-pitr.sh, or BENCH_PITR_SCRIPT: a swappable script)
  basebackup     base-backup + pitr-prepare vs pgBackRest backup/restore (process-max 2,
                 zst + aes) vs pg_basebackup -Ft: MB/s, CPU, max RSS
  s3             drain and single cold calls against the S3 test server (moto on loopback):
                 wal-push vs curl PUT (storage floor), requests per segment (client and server)
  incremental    PostgreSQL 17 with summarize_wal: full vs incr after ~1%, ~10% and pgbench
                 60 s changes (bytes read, stored, wall, CPU; pg_basebackup --incremental
                 beside it), restore of full + 6 incrementals vs the full (scripts/bench/incremental.py)
  codec          the Criterion codec benches (lib/benches/codec.rs) on a real segment of
                 each corpus: encode/decode MiB/s, zstd 1/3, gzip 6, with and without AES
  scale          (issue 14; scripts/bench/scale_stage.py) a pgbench scale-1000 cluster: base-backup
                 and pitr-prepare MB/s, max RSS, spool peak; the backup from a standby; a resume
  rto            delta against full restore, PITR through a latency- and bandwidth-shaped
                 S3 against loopback, verify's first and second run, status requests
                 (scripts/bench/rto.py)

Run by scripts/bench.sh (which builds release binaries and installs pgBackRest); by hand:
  WALVAULT_BIN_DIR=target/release python3 scripts/bench/harness.py [--quick] [--stages a,b]
Everything is bounded in time, runs on loopback/unix sockets only, stops what it starts by
PID and removes its scratch directory.
"""
import argparse
import ctypes
import glob
import json
import os
import platform
import pwd
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
BIN = os.path.abspath(os.environ.get("WALVAULT_BIN_DIR", os.path.join(REPO_ROOT, "target/release")))
ROOT = os.geteuid() == 0
PG = pwd.getpwnam("postgres") if ROOT else None
SEG = 16 * 1024 * 1024
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
PGBR_PASS = "benchmarkbenchmarkbenchmark"
STAGES = ["corpora", "archive-single", "drain", "live", "restore", "basebackup", "s3", "codec", "incremental", "rto", "scale"]
# `scale` (a 15 GB cluster, hours on 2 cores) runs only when named.
DEFAULT_STAGES = [s for s in STAGES if s != "scale"]
PORTS = {"pgbench": 54340, "oltp": 54341, "live": 54342, "bb": 54343}


def log(msg):
    print(f"{time.strftime('%H:%M:%S')} bench: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- processes
def pg_kw():
    return {"user": PG.pw_uid, "group": PG.pw_gid, "extra_groups": []} if ROOT else {}


def as_pg(cmd, timeout=1800, **kw):
    kw.update(pg_kw())
    kw.setdefault("stdout", subprocess.DEVNULL)
    return subprocess.run(cmd, check=True, timeout=timeout, **kw)


def chown(path):
    if not ROOT:
        return
    if os.path.isfile(path):
        os.chown(path, PG.pw_uid, PG.pw_gid)
        return
    for d, _, files in os.walk(path):
        os.chown(d, PG.pw_uid, PG.pw_gid)
        for f in files:
            os.chown(os.path.join(d, f), PG.pw_uid, PG.pw_gid)


def mkdir_pg(path):
    os.makedirs(path, exist_ok=True)
    chown(path)
    return path


def measure(cmd, env=None, cwd=None, pg=True, shell=False, timeout=900, capture=False):
    """Run one command; wall seconds and CPU seconds (user+sys of it and the children it
    waited for) from wait4, max RSS (KiB, the largest process) from GNU time when installed,
    exit code, stdout when `capture`. GNU time itself adds about 1 ms of CPU."""
    err = tempfile.TemporaryFile()
    rss_fd, rss_file = tempfile.mkstemp(prefix="walvault-bench-rss.")
    os.close(rss_fd)
    if pg and ROOT:
        os.chown(rss_file, PG.pw_uid, PG.pw_gid)
    # Max RSS from GNU time: wait4's ru_maxrss of a child forked from this Python process
    # would count the interpreter's RSS the child had before exec (about 12 MiB).
    if TIME:
        cmd = [TIME, "-f", "%M", "-o", rss_file] + (["sh", "-c", cmd] if shell else list(cmd))
        shell = False
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, cwd=cwd, shell=shell, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                         stderr=err, start_new_session=True, **(pg_kw() if pg else {}))
    timer = threading.Timer(timeout, lambda: os.killpg(p.pid, signal.SIGKILL))
    timer.start()
    out = b""
    if capture:
        out = p.stdout.read()
        p.stdout.close()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    timer.cancel()
    p.returncode = os.waitstatus_to_exitcode(status)
    err.seek(0)
    maxrss = ru.ru_maxrss
    try:
        with open(rss_file) as fh:
            maxrss = int(fh.read().split()[-1])
    except (OSError, ValueError, IndexError):
        pass
    os.unlink(rss_file)
    r = {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "maxrss_kib": maxrss, "rc": p.returncode,
         "stderr": err.read().decode(errors="replace")[-800:]}
    if capture:
        r["stdout"] = out.decode(errors="replace")
    return r


def checked(r, what):
    if r["rc"] != 0:
        raise RuntimeError(f"{what}: exit {r['rc']}: {r['stderr']}")
    return r


PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)


class Reaper:
    """While active, processes that detach from our children (pgBackRest's async archiver,
    wal-push's push-ahead helper, wal-fetch's prefetch worker) are reparented to this
    process; reaping them adds their CPU to RUSAGE_CHILDREN, so it is counted."""

    def __enter__(self):
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        return self

    def reap(self, deadline_s=60):
        end = time.time() + deadline_s
        while time.time() < end:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return True
            if pid == 0:
                time.sleep(0.05)
        return False

    def __exit__(self, *exc):
        self.reap(30)
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def children_cpu():
    ru = __import__("resource").getrusage(__import__("resource").RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def median(xs):
    return statistics.median(xs) if xs else None


def du(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs
               if not os.path.islink(os.path.join(d, f)))


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0].strip("* ")
    except (OSError, IndexError, subprocess.SubprocessError):
        return None


def page_cache_reclaim():
    """A DAMON `pageout` scheme running on this machine (a virtual machine's host may set one):
    it reclaims pages, page cache included, idle for `min_idle_s`, up to `max_bytes_per_s`.
    None when there is none (or it cannot be read)."""
    base = "/sys/kernel/mm/damon/admin/kdamonds"
    try:
        for k in sorted(os.listdir(base)):
            if open(f"{base}/{k}/state").read().strip() != "on":
                continue
            ctx = f"{base}/{k}/contexts/0"
            aggr_us = int(open(f"{ctx}/monitoring_attrs/intervals/aggr_us").read())
            for sch in sorted(os.listdir(f"{ctx}/schemes")):
                sd = f"{ctx}/schemes/{sch}"
                if not os.path.isdir(sd) or open(f"{sd}/action").read().strip() != "pageout":
                    continue
                age = int(open(f"{sd}/access_pattern/age/min").read())
                q_bytes = int(open(f"{sd}/quotas/bytes").read())
                q_ms = int(open(f"{sd}/quotas/reset_interval_ms").read()) or 1000
                return {"min_idle_s": age * aggr_us / 1e6, "max_bytes_per_s": q_bytes * 1000 // q_ms}
    except (OSError, ValueError):
        return None
    return None


def machine():
    return {
        "page_cache_reclaim": page_cache_reclaim(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nproc": os.cpu_count(),
        "loadavg": list(os.getloadavg()),
        "kernel": platform.release(),
        "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), None),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "versions": {
            "walvault": version([f"{BIN}/wal-push", "--version"]),
            "walvault_commit": version(["git", "-C", REPO_ROOT, "describe", "--always", "--dirty"]),
            "postgresql": version([f"{PG_BIN}/postgres", "--version"]),
            "pgbackrest": version(["pgbackrest", "version"]) if shutil.which("pgbackrest") else None,
            "zstd": version(["zstd", "--version"]),
            "openssl": version(["openssl", "version"]),
        },
    }


# ----------------------------------------------------------------------------- clusters
class Cluster:
    def __init__(self, work, name, port, conf=""):
        self.work, self.name, self.port = work, name, port
        self.pgdata = os.path.join(work, f"pg-{name}")
        self.sock = work
        self.logf = os.path.join(work, f"pg-{name}.log")
        self.extra = conf

    def init(self):
        as_pg([f"{PG_BIN}/initdb", "-D", self.pgdata, "-U", "postgres", "--auth=trust", "--no-sync"])
        with open(os.path.join(self.pgdata, "postgresql.conf"), "a") as f:
            f.write(f"listen_addresses = ''\nunix_socket_directories = '{self.sock}'\nport = {self.port}\n{self.extra}\n")
        return self

    def start(self):
        as_pg([f"{PG_BIN}/pg_ctl", "-D", self.pgdata, "-l", self.logf, "-w", "-t", "120", "start"])

    def stop(self, mode="fast"):
        subprocess.run([f"{PG_BIN}/pg_ctl", "-D", self.pgdata, "-m", mode, "-w", "-t", "300", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=400, **pg_kw())

    def psql(self, sql, capture=False, timeout=1800):
        cmd = [f"{PG_BIN}/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", self.sock, "-p", str(self.port),
               "-U", "postgres", "-d", "postgres", "-c", sql]
        r = as_pg(cmd, timeout=timeout, stdout=subprocess.PIPE if capture else subprocess.DEVNULL)
        return r.stdout.decode().strip() if capture else None

    def pgbench(self, *args, timeout=3600):
        as_pg([f"{PG_BIN}/pgbench", "-h", self.sock, "-p", str(self.port), "-U", "postgres", *args, "postgres"],
              timeout=timeout, stderr=subprocess.DEVNULL)


OLTP = """
SET client_min_messages = warning;
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


def make_corpus(work, kind, segments):
    """A stopped cluster whose pg_wal holds `segments` completed segments of `kind` WAL
    (pgbench, or the OLTP mix). The segments stay in place: pgBackRest checks the cluster."""
    # Checkpoints every 30 s as on a busy server (full-page images in the WAL); no commit
    # waits for its WAL flush, so a loaded 2-core machine still makes WAL quickly.
    c = Cluster(work, kind, PORTS[kind], "wal_keep_size = 100GB\nmax_wal_size = 100GB\nfsync = off\n"
                "synchronous_commit = off\ncheckpoint_timeout = 30s\n").init()
    c.start()
    wal = os.path.join(c.pgdata, "pg_wal")

    def count():
        return len([n for n in os.listdir(wal) if len(n) == 24])
    if kind == "pgbench":
        c.pgbench("-i", "-s", "10", "-q")
    deadline = time.time() + 1800
    while count() <= segments + 2 and time.time() < deadline:
        if kind == "pgbench":
            c.pgbench("-n", "-T", "5", "-c", "4", "-j", "2")
        else:
            c.psql(OLTP)
    c.psql("SELECT pg_switch_wal()")
    c.stop()
    segs = sorted(n for n in os.listdir(wal) if len(n) == 24)[2:segments + 2]  # skip initdb's segments
    return c, segs


def previous_results(stage):
    """The results of `stage` in docs/benchmarks (a partial rerun keeps what it does not redo),
    with `_date`: when they were measured; None when there are none."""
    try:
        with open(os.path.join(REPO_ROOT, "docs", "benchmarks", f"{stage}.json")) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    res = doc.get("results")
    if isinstance(res, dict):
        res = dict(res, _date=(doc.get("machine") or {}).get("date"))
    return res


def load_corpora(work):
    path = os.path.join(work, "corpora.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        d = json.load(f)
    return {k: (Cluster(work, k, PORTS[k]), v) for k, v in d.items()}


def pgbackrest_conf(work, pgdata, port, tag, asynchronous, process_max=2, s3=None):
    """A pgBackRest config: zst level 1 + aes-256-cbc, into a local directory, or with
    `s3` = (port, bucket) into the TLS S3 test server."""
    repo = mkdir_pg(os.path.join(work, f"pgbr-repo-{tag}"))
    spool = mkdir_pg(os.path.join(work, f"pgbr-spool-{tag}"))
    conf = os.path.join(work, f"pgbr-{tag}.conf")
    if s3:
        where = (f"repo1-type=s3\nrepo1-path=/{tag}\nrepo1-s3-endpoint=127.0.0.1\nrepo1-storage-port={s3[0]}\n"
                 f"repo1-s3-bucket={s3[1]}\nrepo1-s3-region=us-east-1\nrepo1-s3-key=bench\nrepo1-s3-key-secret=benchbench\n"
                 "repo1-s3-uri-style=path\nrepo1-storage-verify-tls=n\n")
    else:
        where = f"repo1-path={repo}\n"
    with open(conf, "w") as f:
        f.write(f"[global]\n{where}repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass={PGBR_PASS}\n"
                f"compress-type=zst\ncompress-level=1\nlog-level-console=warn\nlog-level-file=off\nlock-path={spool}\n"
                f"spool-path={spool}\narchive-async={'y' if asynchronous else 'n'}\nprocess-max={process_max}\n"
                f"start-fast=y\narchive-timeout=600\n"
                f"[bench]\npg1-path={pgdata}\npg1-socket-path={work}\npg1-port={port}\n")
    chown(conf)
    return conf, repo


def stanza_create(cluster, conf, running=False):
    if not running:
        cluster.start()
    try:
        as_pg(["pgbackrest", f"--config={conf}", "--stanza=bench", "stanza-create"], timeout=120)
    finally:
        if not running:
            cluster.stop()


def set_ready(pgdata, segs):
    status = os.path.join(pgdata, "pg_wal", "archive_status")
    for n in os.listdir(status):
        os.unlink(os.path.join(status, n))
    for s in segs:
        open(os.path.join(status, s + ".ready"), "w").close()
    chown(status)


def drain(pgdata, segs, command, env, json_out=False):
    """Call `command` (%p, %f) per .ready file in name order as PostgreSQL's archiver does,
    renaming .ready to .done on success. Wall, CPU (children, detached helpers included
    through the Reaper), and wal-push --json outputs when asked."""
    status = os.path.join(pgdata, "pg_wal", "archive_status")
    outputs = []
    with Reaper() as reaper:
        cpu0 = children_cpu()
        t0 = time.perf_counter()
        for s in segs:
            cmd = command.replace("%p", f"pg_wal/{s}").replace("%f", s)
            r = subprocess.run(cmd, cwd=pgdata, env=env, shell=True, capture_output=True, timeout=600, **pg_kw())
            if r.returncode != 0:
                raise RuntimeError(f"{command}: {s}: exit {r.returncode}: {r.stderr.decode()[-500:]}")
            if json_out:
                outputs.append(r.stdout.decode())
            os.rename(os.path.join(status, s + ".ready"), os.path.join(status, s + ".done"))
        wall = time.perf_counter() - t0
        reaper.reap(60)
        cpu = children_cpu() - cpu0
    return wall, cpu, outputs


def walvault_env(work, repo_dir, key, extra=None):
    env = dict(os.environ, WALVAULT_REPO=f"file://{repo_dir}", WALVAULT_KEY_FILE=key, WALVAULT_LOG="warn",
               WALVAULT_ENV="bench", WALVAULT_CACHE_DIR=mkdir_pg(os.path.join(work, "cache-" + os.path.basename(repo_dir))))
    env.update(extra or {})
    return env


# ----------------------------------------------------------------------------- stages
def stage_corpora(ctx):
    res = {}
    corpora = {}
    for kind in ("pgbench", "oltp"):
        t0 = time.time()
        c, segs = make_corpus(ctx.work, kind, ctx.segments)
        corpora[kind] = segs
        res[kind] = {"segments": len(segs), "generate_s": time.time() - t0, "first": segs[0], "last": segs[-1]}
        log(f"corpus {kind}: {len(segs)} segments in {time.time() - t0:.0f} s")
    with open(os.path.join(ctx.work, "corpora.json"), "w") as f:
        json.dump(corpora, f)
    return res


def need_corpora(ctx):
    c = load_corpora(ctx.work)
    if c is None:
        stage_corpora(ctx)
        c = load_corpora(ctx.work)
    return c


def stage_archive_single(ctx):
    corpora = need_corpora(ctx)
    cluster, segs = corpora["pgbench"]
    runs = min(ctx.runs, len(segs))
    w = ctx.work
    out = mkdir_pg(os.path.join(w, "single-out"))
    repo = mkdir_pg(os.path.join(w, "single-repo"))
    env = walvault_env(w, repo, ctx.key)
    fetch_env = dict(env, WALVAULT_FETCH_PREFETCH="0")
    tools = {"cp + fsync": [], "zstd -3 | openssl + fsync": [], "wal-push": [], "wal-fetch (cold, no prefetch)": []}
    conf = None
    if ctx.pgbackrest:
        conf, pgbr_repo = pgbackrest_conf(w, cluster.pgdata, cluster.port, "single", False)
        stanza_create(cluster, conf)
        tools["pgBackRest archive-push (sync)"] = []
        tools["pgBackRest archive-get (sync)"] = []
    for i, s in enumerate(segs[:runs]):
        p = os.path.join("pg_wal", s)
        tools["cp + fsync"].append(checked(measure(f"cp {p} {out}/{s} && sync {out}/{s}", cwd=cluster.pgdata, shell=True), "cp"))
        tools["zstd -3 | openssl + fsync"].append(checked(measure(
            f"zstd -3 -q -c {p} | openssl enc -aes-256-cbc -pbkdf2 -pass file:{ctx.key} > {out}/{s}.zst.enc && sync {out}/{s}.zst.enc",
            cwd=cluster.pgdata, shell=True), "zstd|openssl"))
        tools["wal-push"].append(checked(measure([f"{BIN}/wal-push", "--json", p], env=env, cwd=cluster.pgdata, capture=True), "wal-push"))
        if conf:
            tools["pgBackRest archive-push (sync)"].append(checked(measure(
                ["pgbackrest", f"--config={conf}", "--stanza=bench", "archive-push", p], cwd=cluster.pgdata), "pgbackrest archive-push"))
        os.unlink(f"{out}/{s}")
        tools["wal-fetch (cold, no prefetch)"].append(checked(measure(
            [f"{BIN}/wal-fetch", s, f"{out}/{s}"], env=fetch_env, cwd=out), "wal-fetch"))
        if conf:
            os.unlink(f"{out}/{s}")
            tools["pgBackRest archive-get (sync)"].append(checked(measure(
                ["pgbackrest", f"--config={conf}", "--stanza=bench", "archive-get", s, f"{out}/{s}"], cwd=out), "pgbackrest archive-get"))
        os.unlink(f"{out}/{s}")
    stored = {
        "wal-push": du(os.path.join(repo)) / max(runs, 1),
        "zstd -3 | openssl + fsync": sum(os.path.getsize(f) for f in glob.glob(f"{out}/*.zst.enc")) / max(runs, 1),
    }
    if conf:
        stored["pgBackRest archive-push (sync)"] = du(os.path.join(pgbr_repo, "archive")) / max(runs, 1)
    rows = []
    for name, rs in tools.items():
        rows.append({"tool": name, "runs": len(rs), "wall_ms": 1000 * median([r["wall_s"] for r in rs]),
                     "cpu_ms": 1000 * median([r["cpu_s"] for r in rs]),
                     "maxrss_mib": max(r["maxrss_kib"] for r in rs) / 1024,
                     "maxrss_median_mib": median([r["maxrss_kib"] for r in rs]) / 1024,
                     "stored_bytes": stored.get(name)})
    requests = None
    try:
        requests = json.loads(tools["wal-push"][-1]["stdout"]).get("requests")
    except (ValueError, KeyError, AttributeError):
        pass
    return {"segment_bytes": SEG, "corpus": "pgbench", "rows": rows, "wal_push_requests": requests}


def drain_tools(ctx, kind, cluster):
    tools = [
        ("cp + fsync", "cp %p {r}/%f && sync {r}/%f", {}),
        ("zstd -1 + fsync", "zstd -1 -q -f %p -o {r}/%f.zst && sync {r}/%f.zst", {}),
        ("wal-push (parallel 1)", f"{BIN}/wal-push %p", {"WALVAULT_PUSH_PARALLEL": "1"}),
        ("wal-push (parallel 2)", f"{BIN}/wal-push %p", {"WALVAULT_PUSH_PARALLEL": "2"}),
        ("wal-push (parallel 4)", f"{BIN}/wal-push %p", {"WALVAULT_PUSH_PARALLEL": "4"}),
    ]
    if ctx.pgbackrest:
        tools += [("pgBackRest sync", "pgbackrest --config={c} --stanza=bench archive-push %p", {"pgbr": "n"}),
                  ("pgBackRest async (process-max 2)", "pgbackrest --config={c} --stanza=bench archive-push %p", {"pgbr": "y"})]
    return tools


def stage_drain(ctx):
    corpora = need_corpora(ctx)
    out = {"corpora": {}}
    for kind, (cluster, segs) in corpora.items():
        rows = []
        for name, command, extra in drain_tools(ctx, kind, cluster):
            tag = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + "-" + kind
            r = mkdir_pg(os.path.join(ctx.work, f"drain-{tag}"))
            env = walvault_env(ctx.work, r, ctx.key, {k: v for k, v in extra.items() if k != "pgbr"})
            if "pgbr" in extra:
                conf, r = pgbackrest_conf(ctx.work, cluster.pgdata, cluster.port, tag, extra["pgbr"] == "y")
                stanza_create(cluster, conf)
                command = command.replace("{c}", conf)
            else:
                command = command.replace("{r}", r)
            set_ready(cluster.pgdata, segs)
            wall, cpu, _ = drain(cluster.pgdata, segs, command, env)
            stored = du(os.path.join(r, "archive")) if "pgbr" in extra else du(r)
            row = {"tool": name, "segments": len(segs), "wall_s": wall, "seg_per_s": len(segs) / wall,
                   "cpu_s_per_seg": cpu / len(segs), "stored_bytes": stored, "ratio": len(segs) * SEG / max(stored, 1)}
            rows.append(row)
            log(f"drain {kind} {name}: {row['seg_per_s']:.1f} seg/s, {row['cpu_s_per_seg']:.3f} CPU s/seg, ratio {row['ratio']:.2f}")
            shutil.rmtree(r, ignore_errors=True)
        by = {r["tool"]: r for r in rows}
        floor = by["cp + fsync"]["seg_per_s"]
        codec = by["zstd -1 + fsync"]["cpu_s_per_seg"]
        cores = os.cpu_count() or 1
        limit = min(cores / codec, floor)
        best = max(r["seg_per_s"] for r in rows if r["tool"].startswith("wal-push"))
        out["corpora"][kind] = {"rows": rows, "storage_floor_seg_per_s": floor, "codec_cpu_s_per_seg": codec,
                                "cores": cores, "limit_seg_per_s": limit, "walvault_best_seg_per_s": best,
                                "walvault_pct_of_limit": 100 * best / limit}
    return out


LIVE_SQL = [
    ("bulk INSERT ... SELECT", "CREATE TABLE bulk(id bigint, v text, n numeric); "
     "INSERT INTO bulk SELECT g, md5(g::text) || repeat('x', 60), g * 1.5 FROM generate_series(1, {rows}) g"),
    ("COPY", "CREATE TABLE copied(v text); COPY copied FROM PROGRAM 'yes payload-payload-payload-payload-payload | head -n {rows}'"),
    ("CREATE INDEX", "CREATE INDEX bulk_v ON bulk(v); CREATE INDEX accounts_abalance ON pgbench_accounts(abalance, filler)"),
]


def stage_live(ctx):
    results = []
    tools = [("wal-push", None)]
    if ctx.pgbackrest:
        tools.append(("pgBackRest async (process-max 2)", "async"))
    for name, kind in tools:
        tag = "live-" + ("walvault" if kind is None else "pgbr")
        c = Cluster(ctx.work, tag, PORTS["live"], "wal_level = replica\narchive_mode = on\nmax_wal_size = 4GB\n"
                    "archive_timeout = 0\n")
        c.pgdata = os.path.join(ctx.work, f"pg-{tag}")
        c.init()
        if kind is None:
            r = mkdir_pg(os.path.join(ctx.work, f"{tag}-repo"))
            conf = os.path.join(ctx.work, f"{tag}.conf")
            with open(conf, "w") as f:
                f.write(f"WALVAULT_REPO=file://{r}\nWALVAULT_KEY_FILE={ctx.key}\nWALVAULT_ENV=bench\n"
                        f"WALVAULT_CACHE_DIR={mkdir_pg(os.path.join(ctx.work, tag + '-cache'))}\n")
            chown(conf)
            cmd = f"WALVAULT_CONFIG={conf} WALVAULT_LOG=warn {BIN}/wal-push %p"
        else:
            conf, r = pgbackrest_conf(ctx.work, c.pgdata, c.port, tag, True)
            cmd = f"pgbackrest --config={conf} --stanza=bench archive-push %p"
        with open(os.path.join(c.pgdata, "postgresql.conf"), "a") as f:
            f.write(f"archive_command = '{cmd}'\n")
        c.start()
        if kind:
            as_pg(["pgbackrest", f"--config={conf}", "--stanza=bench", "stanza-create"], timeout=120)
        status = os.path.join(c.pgdata, "pg_wal", "archive_status")
        samples = []
        stop = threading.Event()

        def sampler():
            t0 = time.time()
            while not stop.is_set():
                try:
                    n = sum(1 for x in os.listdir(status) if x.endswith(".ready"))
                except OSError:
                    n = -1
                samples.append((round(time.time() - t0, 2), n))
                stop.wait(0.1)
        th = threading.Thread(target=sampler, daemon=True)
        try:
            lsn0 = c.psql("SELECT pg_current_wal_lsn() - '0/0'", capture=True)
            th.start()
            t0 = time.time()
            phases = []
            p0 = time.time()
            c.pgbench("-i", "-s", str(ctx.live_scale), "-q")
            phases.append({"phase": f"pgbench -i -s {ctx.live_scale}", "s": time.time() - p0})
            for pname, sql in LIVE_SQL:
                p0 = time.time()
                c.psql(sql.format(rows=ctx.live_rows))
                phases.append({"phase": pname, "s": time.time() - p0})
            c.psql("SELECT pg_switch_wal()")
            gen_s = time.time() - t0
            lsn1 = c.psql("SELECT pg_current_wal_lsn() - '0/0'", capture=True)
            end = time.time() + 600
            while time.time() < end:
                if not any(x.endswith(".ready") for x in os.listdir(status)):
                    break
                time.sleep(0.1)
            drained_s = time.time() - t0 - gen_s
        finally:
            stop.set()
            th.join(5)
            c.stop("immediate")
        counts = [n for _, n in samples if n >= 0]
        wal_bytes = int(float(lsn1)) - int(float(lsn0))
        results.append({"tool": name, "generate_s": gen_s, "wal_bytes": wal_bytes, "wal_mb_per_s": wal_bytes / 1e6 / gen_s,
                        "segments": wal_bytes / SEG, "phases": phases, "max_ready": max(counts) if counts else None,
                        "mean_ready": statistics.mean(counts) if counts else None, "samples": len(counts),
                        "drain_after_end_s": drained_s, "timeline": samples[::5]})
        log(f"live {name}: {wal_bytes / SEG:.0f} segments in {gen_s:.0f} s, max .ready {max(counts) if counts else None}")
        shutil.rmtree(c.pgdata, ignore_errors=True)
        shutil.rmtree(r, ignore_errors=True)
    return {"scale": ctx.live_scale, "rows": ctx.live_rows, "results": results}


def stage_restore(ctx):
    corpora = need_corpora(ctx)
    cluster, segs = corpora["pgbench"]
    n = min(len(segs), 9)
    w = ctx.work
    repo = mkdir_pg(os.path.join(w, "restore-repo"))
    env = walvault_env(w, repo, ctx.key)
    for s in segs[:n]:
        checked(measure([f"{BIN}/wal-push", os.path.join("pg_wal", s)], env=env, cwd=cluster.pgdata), "wal-push")
    dest = mkdir_pg(os.path.join(w, "restore-pgdata"))
    mkdir_pg(os.path.join(dest, "pg_wal"))
    cache = mkdir_pg(os.path.join(w, "restore-cache"))
    fenv = dict(env, WALVAULT_CACHE_DIR=cache, WALVAULT_FETCH_PREFETCH="4", PGDATA=dest)
    prefetched, cold, cp = [], [], []
    with Reaper():
        # The first call fetches and starts the prefetch worker; each later one is served
        # from the spool once the worker has written the file there.
        checked(measure([f"{BIN}/wal-fetch", segs[0], "pg_wal/RECOVERYXLOG"], env=fenv, cwd=dest), "wal-fetch")
        for s in segs[1:n]:
            deadline = time.time() + 30
            while time.time() < deadline and not glob.glob(os.path.join(cache, "prefetch-*", s)):
                time.sleep(0.05)
            hit = bool(glob.glob(os.path.join(cache, "prefetch-*", s)))
            r = checked(measure([f"{BIN}/wal-fetch", "--json", s, "pg_wal/RECOVERYXLOG"], env=fenv, cwd=dest, capture=True), "wal-fetch")
            r["prefetched"] = hit and "prefetched" in r.get("stdout", "")
            prefetched.append(r)
        time.sleep(1)
    cold_env = dict(env, WALVAULT_FETCH_PREFETCH="0", WALVAULT_CACHE_DIR=mkdir_pg(os.path.join(w, "restore-cache-cold")))
    for s in segs[1:n]:
        cold.append(checked(measure([f"{BIN}/wal-fetch", s, "pg_wal/RECOVERYXLOG"], env=cold_env, cwd=dest), "wal-fetch"))
        cp.append(checked(measure(f"cp {cluster.pgdata}/pg_wal/{s} pg_wal/RECOVERYXLOG && sync pg_wal/RECOVERYXLOG",
                                  cwd=dest, shell=True), "cp"))
    hits = [r for r in prefetched if r["prefetched"]]

    def row(name, rs):
        return {"tool": name, "runs": len(rs), "wall_ms": 1000 * median([r["wall_s"] for r in rs]) if rs else None,
                "cpu_ms": 1000 * median([r["cpu_s"] for r in rs]) if rs else None,
                "maxrss_mib": max(r["maxrss_kib"] for r in rs) / 1024 if rs else None}
    res = {"fetch": [row("wal-fetch, file already prefetched", hits), row("wal-fetch, cold (no prefetch)", cold),
                     row("cp + fsync (restore_command floor)", cp)],
           "prefetch_hits": len(hits), "prefetch_calls": len(prefetched)}
    shutil.rmtree(dest, ignore_errors=True)
    # PITR: a separate, swappable script (the restore branch has its own).
    script = os.environ.get("BENCH_PITR_SCRIPT", os.path.join(REPO_ROOT, "scripts", "bench-pitr.sh"))
    pitr_json = os.path.join(w, "pitr.json")
    penv = dict(os.environ, WALVAULT_BIN_DIR=BIN, PG_BIN=PG_BIN, BENCH_SEGMENTS=str(ctx.pitr_segments),
                BENCH_QUICK="1" if ctx.quick else "0", BENCH_PGBACKREST="1" if ctx.pgbackrest else "0")
    t0 = time.time()
    r = subprocess.run([script, pitr_json], env=penv, timeout=3600, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    res["pitr_script"] = os.path.relpath(script, REPO_ROOT)
    res["pitr_seconds"] = time.time() - t0
    if r.returncode == 0 and os.path.exists(pitr_json):
        with open(pitr_json) as f:
            res["pitr"] = json.load(f)
    elif r.returncode == 0:
        # A swapped-in script that reports in text, not JSON: keep what it printed.
        res["pitr_text"] = (r.stdout + r.stderr).decode(errors="replace")[-4000:]
    else:
        res["pitr_error"] = f"exit {r.returncode}: {r.stderr.decode(errors='replace')[-1500:]}"
        log(f"pitr stage failed: {res['pitr_error']}")
    return res


def stage_basebackup(ctx):
    w = ctx.work
    c = Cluster(w, "bb", PORTS["bb"], "wal_level = replica\narchive_mode = on\nmax_wal_size = 4GB\n")
    c.init()
    repo = mkdir_pg(os.path.join(w, "bb-repo"))
    env = walvault_env(w, repo, ctx.key, {"PGHOST": w, "PGPORT": str(c.port), "PGUSER": "postgres", "PGDATABASE": "postgres",
                                          "PGDATA": c.pgdata})
    wconf = os.path.join(w, "bb-walvault.conf")
    with open(wconf, "w") as f:
        f.write(f"WALVAULT_REPO=file://{repo}\nWALVAULT_KEY_FILE={ctx.key}\nWALVAULT_ENV=bench\nWALVAULT_CACHE_DIR={env['WALVAULT_CACHE_DIR']}\n")
    chown(wconf)
    archive = f"WALVAULT_CONFIG={wconf} WALVAULT_LOG=warn {BIN}/wal-push %p"
    conf = None
    if ctx.pgbackrest:
        conf, _ = pgbackrest_conf(w, c.pgdata, c.port, "bb", False)
        archive += f" && pgbackrest --config={conf} --stanza=bench archive-push %p"
    with open(os.path.join(c.pgdata, "postgresql.conf"), "a") as f:
        f.write(f"archive_command = '{archive}'\n")
    rows = []
    c.start()
    try:
        if conf:
            as_pg(["pgbackrest", f"--config={conf}", "--stanza=bench", "stanza-create"], timeout=120)
        t0 = time.time()
        c.pgbench("-i", "-s", str(ctx.bb_scale), "-q")
        c.psql("CHECKPOINT")
        load_s = time.time() - t0
        size = int(c.psql("SELECT sum(pg_database_size(oid)) FROM pg_database", capture=True))
        log(f"basebackup: cluster of {size / 1e6:.0f} MB")
        # MB/s divides the bytes actually backed up (base-backup's `bytes`: the data files,
        # without pg_wal) and restored (pitr-prepare's `bytes`), the same divisor for every tool.
        moved = {}

        def add(name, r, op):
            checked(r, name)
            if "stdout" in r:
                moved.setdefault(op, int(json.loads(r["stdout"])["bytes"]))
            n = moved.get(op) or moved.get("backup") or size
            rows.append({"tool": name, "op": op, "wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "bytes": n, "mb_per_s": n / 1e6 / r["wall_s"],
                         "cpu_s_per_gb": r["cpu_s"] / (n / 1e9), "maxrss_mib": r["maxrss_kib"] / 1024})
            log(f"basebackup {name}: {n / 1e6 / r['wall_s']:.0f} MB/s of {n / 1e6:.0f} MB, {r['cpu_s']:.1f} CPU s, "
                f"{r['maxrss_kib'] / 1024:.0f} MiB")
        spool = mkdir_pg(os.path.join(w, "bb-spool"))
        add("walvault base-backup", measure([f"{BIN}/base-backup", "--json", "--checkpoint", "fast", "--spool-dir", spool], env=env, cwd=w, timeout=3600,
                                            capture=True), "backup")
        stored = du(repo)
        rdir = os.path.join(w, "bb-restore-walvault")
        mkdir_pg(rdir)
        add("walvault pitr-prepare", measure([f"{BIN}/pitr-prepare", "--json", "--pgdata", rdir, "--immediate"], env=env, cwd=w,
                                             timeout=3600, capture=True), "restore")
        shutil.rmtree(rdir, ignore_errors=True)
        if conf:
            add("pgBackRest backup (process-max 2)", measure(["pgbackrest", f"--config={conf}", "--stanza=bench", "--type=full",
                                                              "backup"], cwd=w, timeout=3600), "backup")
            rdir = mkdir_pg(os.path.join(w, "bb-restore-pgbr"))
            add("pgBackRest restore (process-max 2)", measure(["pgbackrest", f"--config={conf}", "--stanza=bench",
                                                               f"--pg1-path={rdir}", "restore"], cwd=w, timeout=3600), "restore")
            shutil.rmtree(rdir, ignore_errors=True)
        tdir = os.path.join(w, "bb-pg_basebackup")
        add("pg_basebackup -Ft (no compression)", measure([f"{PG_BIN}/pg_basebackup", "-h", w, "-p", str(c.port), "-U", "postgres",
                                                           "-D", tdir, "-Ft", "-X", "fetch", "-c", "fast"], cwd=w, timeout=3600), "backup")
        shutil.rmtree(tdir, ignore_errors=True)
    finally:
        c.stop("immediate")
        shutil.rmtree(c.pgdata, ignore_errors=True)
    return {"scale": ctx.bb_scale, "cluster_bytes": size, "backed_up_bytes": moved.get("backup"),
            "restored_bytes": moved.get("restore"), "load_s": load_s, "walvault_stored_bytes": stored, "rows": rows}


def moto_requests(logf):
    try:
        with open(logf, errors="replace") as f:
            return sum(1 for line in f if re.search(r'"(GET|PUT|POST|HEAD|DELETE) ', line))
    except OSError:
        return 0


def start_tls_proxy(w, upstream_port):
    """TLS (self-signed) in front of the S3 test server for pgBackRest, whose S3 driver speaks
    only https: scripts/bench/tls_proxy.py, detached (not our child: the Reaper waits for
    every child of this process), stopped by its PID."""
    key, cert = os.path.join(w, "tls.key"), os.path.join(w, "tls.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    import socket
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    logf = os.path.join(w, "tls-proxy.log")
    pid = int(subprocess.run(["sh", "-c", 'nohup python3 "$1" "$2" "$3" "$4" "$5" >"$6" 2>&1 </dev/null & echo $!', "sh",
                              os.path.join(HERE, "tls_proxy.py"), str(port), str(upstream_port), cert, key, logf],
                             check=True, capture_output=True, text=True, timeout=30).stdout)
    tls = {"pid": pid, "port": port}
    for _ in range(100):
        if subprocess.run(["curl", "-kfsS", "-o", "/dev/null", f"https://127.0.0.1:{port}/moto-api/"], capture_output=True).returncode == 0:
            subprocess.run(["curl", "-kfsS", "-X", "PUT", f"https://127.0.0.1:{port}/pgbr"], check=True, capture_output=True, timeout=30)
            return tls
        if not os.path.exists(f"/proc/{pid}"):
            break
        time.sleep(0.1)
    stop_pid(pid)
    raise RuntimeError(f"TLS proxy did not start: {open(logf).read()[-300:]}")


def stop_pid(pid):
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(50):
        if not os.path.exists(f"/proc/{pid}"):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stage_s3(ctx):
    corpora = need_corpora(ctx)
    w = ctx.work
    port_file = os.path.join(w, "s3.port")
    server = os.path.join(REPO_ROOT, "scripts", "s3-test-server.sh")
    r = subprocess.run([server, "start", port_file], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        return {"error": f"S3 test server did not start: {r.stderr[-500:]}"}
    endpoint = r.stdout.strip().splitlines()[-1]
    logf = port_file + ".log"
    out = {"endpoint": endpoint, "server": "moto (scripts/s3-test-server.sh)", "corpora": {}}
    tls = None
    try:
        if ctx.pgbackrest:
            try:
                tls = start_tls_proxy(w, int(endpoint.rsplit(":", 1)[1]))
                out["tls_endpoint"] = f"https://127.0.0.1:{tls['port']}"
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                out["tls_error"] = str(e)
                log(f"no TLS S3 server for pgBackRest: {e}")
        subprocess.run(["curl", "-fsS", "-X", "PUT", f"{endpoint}/bench"], check=True, timeout=30, capture_output=True)
        base = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="benchbench",
                    AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true", WALVAULT_S3_PATH_STYLE="true",
                    WALVAULT_KEY_FILE=ctx.key, WALVAULT_LOG="warn", WALVAULT_ENV="bench")
        for kind, (cluster, segs) in corpora.items():
            segs = segs[:ctx.s3_segments]
            rows = []
            tools = [("curl PUT (storage floor)", "curl -fsS -o /dev/null -T %p " + endpoint + "/bench/floor-" + kind + "/%f", {}),
                     ("wal-push (parallel 1)", f"{BIN}/wal-push --json %p", {"WALVAULT_PUSH_PARALLEL": "1"}),
                     ("wal-push (parallel 2)", f"{BIN}/wal-push --json %p", {"WALVAULT_PUSH_PARALLEL": "2"})]
            for name, command, extra in tools:
                tag = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + "-" + kind
                env = dict(base, WALVAULT_REPO=f"s3://bench/{tag}", WALVAULT_CACHE_DIR=mkdir_pg(os.path.join(w, f"s3cache-{tag}")), **extra)
                set_ready(cluster.pgdata, segs)
                n0 = moto_requests(logf)
                wall, cpu, outputs = drain(cluster.pgdata, segs, command, env, json_out="wal-push" in name)
                server_reqs = moto_requests(logf) - n0
                client = {}
                for o in outputs:
                    try:
                        for k, v in (json.loads(o).get("requests") or {}).items():
                            if isinstance(v, (int, float)):
                                client[k] = client.get(k, 0) + v
                    except ValueError:
                        pass
                row = {"tool": name, "segments": len(segs), "wall_s": wall, "seg_per_s": len(segs) / wall,
                       "cpu_s_per_seg": cpu / len(segs), "server_requests_per_seg": server_reqs / len(segs),
                       "client_requests_per_seg": {k: v / len(segs) for k, v in client.items()} if outputs else None}
                rows.append(row)
                log(f"s3 drain {kind} {name}: {row['seg_per_s']:.1f} seg/s, {row['server_requests_per_seg']:.2f} requests/seg")
            if tls:
                for name, asynchronous in (("pgBackRest sync (TLS)", False), ("pgBackRest async (process-max 2, TLS)", True)):
                    tag = ("async-" if asynchronous else "sync-") + kind
                    conf, _ = pgbackrest_conf(w, cluster.pgdata, cluster.port, f"s3-{tag}", asynchronous, s3=(tls["port"], "pgbr"))
                    stanza_create(cluster, conf)
                    set_ready(cluster.pgdata, segs)
                    n0 = moto_requests(logf)
                    wall, cpu, _ = drain(cluster.pgdata, segs, f"pgbackrest --config={conf} --stanza=bench archive-push %p", dict(os.environ))
                    row = {"tool": name, "segments": len(segs), "wall_s": wall, "seg_per_s": len(segs) / wall,
                           "cpu_s_per_seg": cpu / len(segs), "server_requests_per_seg": (moto_requests(logf) - n0) / len(segs),
                           "client_requests_per_seg": None}
                    rows.append(row)
                    log(f"s3 drain {kind} {name}: {row['seg_per_s']:.1f} seg/s, {row['server_requests_per_seg']:.2f} requests/seg")
            out["corpora"][kind] = {"rows": rows}
        # Single cold calls on S3.
        cluster, segs = corpora["pgbench"]
        env = dict(base, WALVAULT_REPO="s3://bench/single", WALVAULT_CACHE_DIR=mkdir_pg(os.path.join(w, "s3cache-single")))
        push, fetch, pgbr = [], [], []
        dest = mkdir_pg(os.path.join(w, "s3-fetch"))
        conf = None
        if tls:
            conf, _ = pgbackrest_conf(w, cluster.pgdata, cluster.port, "s3-single", False, s3=(tls["port"], "pgbr"))
            stanza_create(cluster, conf)
        for s in segs[:ctx.runs]:
            push.append(checked(measure([f"{BIN}/wal-push", "--json", os.path.join("pg_wal", s)], env=env, cwd=cluster.pgdata, capture=True), "wal-push s3"))
            fetch.append(checked(measure([f"{BIN}/wal-fetch", s, os.path.join(dest, s)], env=dict(env, WALVAULT_FETCH_PREFETCH="0"), cwd=dest), "wal-fetch s3"))
            os.unlink(os.path.join(dest, s))
            if conf:
                pgbr.append(checked(measure(["pgbackrest", f"--config={conf}", "--stanza=bench", "archive-push", os.path.join("pg_wal", s)],
                                            cwd=cluster.pgdata), "pgbackrest archive-push s3"))
        singles = [("wal-push (S3)", push), ("wal-fetch (S3, no prefetch)", fetch)]
        if pgbr:
            singles.append(("pgBackRest archive-push (sync, TLS)", pgbr))
        out["single"] = [{"tool": name, "runs": len(rs), "wall_ms": 1000 * median([x["wall_s"] for x in rs]),
                          "cpu_ms": 1000 * median([x["cpu_s"] for x in rs]), "maxrss_mib": max(x["maxrss_kib"] for x in rs) / 1024}
                         for name, rs in singles]
        try:
            out["single_requests"] = json.loads(push[-1]["stdout"]).get("requests")
        except (ValueError, KeyError):
            pass
    finally:
        subprocess.run([server, "stop", port_file], timeout=60, capture_output=True)
        if tls:
            stop_pid(tls["pid"])
    return out


def stage_codec(ctx):
    corpora = need_corpora(ctx)
    cargo = shutil.which("cargo")
    if not cargo:
        raise RuntimeError("cargo not found: the codec stage runs `cargo bench -p walvault --bench codec`")
    out = {"command": "cargo bench -p walvault --bench codec" + (" -- --quick" if ctx.quick else ""), "corpora": {}}
    for kind, (cluster, segs) in corpora.items():
        seg = os.path.join(ctx.work, f"codec-{kind}")
        shutil.copyfile(os.path.join(cluster.pgdata, "pg_wal", segs[len(segs) // 2]), seg)
        env = dict(os.environ, WALVAULT_BENCH_SEGMENT=seg, WALVAULT_BENCH_LABEL=kind)
        cmd = [cargo, "bench", "-q", "-p", "walvault", "--bench", "codec", "--"] + (["--quick"] if ctx.quick else [])
        r = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=3600)
        if r.returncode != 0:
            raise RuntimeError(f"cargo bench: exit {r.returncode}: {r.stderr[-1000:]}")
        ratios = dict(re.findall(r"segment, (\S+): \d+ -> \d+ bytes \(ratio ([0-9.]+)\)", r.stderr + r.stdout))
        rows = []
        base = os.path.join(REPO_ROOT, "target", "criterion", f"codec_{kind}")
        for op in ("encode", "decode"):
            for label in ("zstd-1", "zstd-1+aes256gcm", "zstd-3", "zstd-3+aes256gcm", "gzip-6", "gzip-6+aes256gcm"):
                try:
                    with open(os.path.join(base, op, label, "new", "estimates.json")) as fh:
                        mean_ns = json.load(fh)["mean"]["point_estimate"]
                except (OSError, KeyError, ValueError):
                    continue
                rows.append({"op": op, "codec": label, "ms": mean_ns / 1e6, "mib_per_s": SEG / (mean_ns / 1e9) / 2**20,
                             "ratio": float(ratios[label]) if label in ratios else None})
        out["corpora"][kind] = {"segment": segs[len(segs) // 2], "rows": rows}
        os.unlink(seg)
        log(f"codec {kind}: " + ", ".join(f"{x['op']} {x['codec']} {x['mib_per_s']:.0f} MiB/s" for x in rows[:2]))
    return out


def stage_incremental(ctx):
    sys.path.insert(0, HERE)
    import incremental  # noqa: E402 -- a stage of its own file, loaded when asked for
    return incremental.run(ctx, sys.modules[__name__])


def stage_rto(ctx):
    import rto  # scripts/bench/rto.py: it uses this module's helpers
    return rto.stage(ctx)


# ----------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer segments and smaller clusters: a smoke run")
    ap.add_argument("--stages", default=",".join(DEFAULT_STAGES), help="comma-separated, from: " + ", ".join(STAGES))
    ap.add_argument("--out", default=os.path.join(REPO_ROOT, "docs", "benchmarks"), help="where the JSON goes")
    ap.add_argument("--segments", type=int, help="segments per corpus (default 200, quick 24)")
    a = ap.parse_args()
    stages = [s.strip() for s in a.stages.split(",") if s.strip()]
    for s in stages:
        if s not in STAGES:
            ap.error(f"unknown stage {s}")
    q = a.quick
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # timeout(1): clean up on the way out

    class Ctx:
        pass
    ctx = Ctx()
    ctx.quick = q
    ctx.segments = a.segments or (24 if q else 200)
    ctx.runs = 5 if q else 15
    ctx.live_scale = 20 if q else 150
    ctx.live_rows = 500_000 if q else 5_000_000
    ctx.bb_scale = 10 if q else 100
    ctx.pitr_segments = 16 if q else 96
    ctx.s3_segments = 12 if q else 100
    ctx.pgbackrest = shutil.which("pgbackrest") is not None
    os.makedirs(a.out, exist_ok=True)
    ctx.work = tempfile.mkdtemp(prefix="walvault-bench-")
    os.chmod(ctx.work, 0o755)
    chown(ctx.work)
    ctx.key = os.path.join(ctx.work, "key")
    with open(ctx.key, "w") as f:
        f.write(subprocess.run(["openssl", "rand", "-base64", "32"], capture_output=True, text=True, check=True).stdout)
    os.chmod(ctx.key, 0o600)
    chown(ctx.key)
    failed = []
    try:
        for s in stages:
            log(f"stage {s}")
            before = machine()
            t0 = time.time()
            try:
                if s == "scale":
                    import scale_stage  # noqa: PLC0415 -- it imports this module
                    res = scale_stage.stage_scale(ctx)
                else:
                    res = globals()["stage_" + s.replace("-", "_")](ctx)
                err = None
            except Exception as e:  # noqa: BLE001 -- one failed stage is reported, the rest still run
                res, err = None, f"{type(e).__name__}: {e}"
                failed.append(s)
                log(f"stage {s} failed: {err}")
            doc = {"stage": s, "quick": q, "seconds": time.time() - t0, "machine": before,
                   "loadavg_after": list(os.getloadavg()), "pgbackrest": ctx.pgbackrest, "error": err, "results": res,
                   "settings": {k: v for k, v in vars(ctx).items() if k not in ("work", "key")}}
            with open(os.path.join(a.out, f"{s}.json"), "w") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
    finally:
        for d in glob.glob(os.path.join(ctx.work, "pg-*")):
            if os.path.exists(os.path.join(d, "postmaster.pid")):
                subprocess.run([f"{PG_BIN}/pg_ctl", "-D", d, "-m", "immediate", "-w", "stop"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=120, **pg_kw())
        shutil.rmtree(ctx.work, ignore_errors=True)
    if failed:
        log(f"failed stages: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
