"""The `rto` stage of the benchmark harness (issue 15), on the S3 test server (moto, loopback):

  delta     full restore (pitr-prepare --force) against pitr-prepare --delta over the same
            data directory with 1% of its relation files changed (target: delta at most 15%)
  pitr      the same recovery (pitr-prepare, then replay to the end) straight to the S3 server
            and through scripts/bench/shaped_proxy.py: 30 ms before each response, 100 MB/s
            per connection (target: at least 0.9x the loopback replay rate)
  verify    walvault verify of many backups and WAL objects (a cluster with 1 MB segments),
            first run and second run after a little more WAL (target: the second reads only
            what is new)
  status    requests per walvault status run (target: at most 3)

Full run: a pgbench cluster of scale 1000 (about 15 GB), 96 WAL segments to replay, 30 backups
and 10,000 WAL objects; --quick: scale 20, 16 segments, 3 backups, 200 WAL objects.
"""
import json
import os
import random
import subprocess
import time

import harness as h
import incremental

PORT, VPORT = 54344, 54345


def conf_file(path, endpoint, ctx, cache, env="bench"):
    with open(path, "w") as f:
        f.write(f"WALVAULT_REPO=s3://rto/pg\nWALVAULT_ENV={env}\nWALVAULT_KEY_FILE={ctx.key}\nWALVAULT_CACHE_DIR={cache}\n"
                f"AWS_ENDPOINT_URL={endpoint}\nAWS_REGION=us-east-1\nWALVAULT_S3_PATH_STYLE=true\nWALVAULT_LOG=warn\n")
    h.chown(path)
    return path


def start_shaped(w, upstream_port, delay_ms, rate):
    import socket
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    logf = os.path.join(w, "shaped-proxy.log")
    pid = int(subprocess.run(["sh", "-c", 'nohup python3 "$1" "$2" "$3" "$4" "$5" >"$6" 2>&1 </dev/null & echo $!', "sh",
                              os.path.join(h.HERE, "shaped_proxy.py"), str(port), str(upstream_port), str(delay_ms), str(rate), logf],
                             check=True, capture_output=True, text=True, timeout=30).stdout)
    time.sleep(0.5)
    return pid, f"http://127.0.0.1:{port}"


def wait_archived(c, timeout=3600):
    last = c.psql("SELECT pg_walfile_name(pg_current_wal_lsn() - 1)", capture=True)
    c.psql("SELECT pg_switch_wal()")
    end = time.time() + timeout
    while time.time() < end and c.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", capture=True) < last:
        time.sleep(0.2)


def prepare(w, pgdata, conf, tag, *extra):
    """pitr-prepare --latest into `pgdata`: its JSON (with its phase breakdown, `phases_ms`)
    and wall seconds."""
    env = dict(os.environ, WALVAULT_CONFIG=conf, WALVAULT_LOG="warn,walvault::ops::repo::phases=info")
    prep = h.checked(h.measure([f"{h.BIN}/pitr-prepare", "--json", "--pgdata", pgdata, "--latest", *extra], env=env, cwd=w,
                               timeout=7200, capture=True), f"pitr-prepare {tag}")
    out = json.loads(prep["stdout"])
    out["phases_ms"] = incremental.phases(prep["stderr"])
    return out, prep["wall_s"]


def sync_seconds():
    """Seconds `sync` takes: what a restore left in the page cache, written back."""
    t0 = time.time()
    subprocess.run(["sync"], timeout=3600)
    return time.time() - t0


def replay(w, pgdata, conf, tag):
    """Start a prepared data directory and wait for the end of recovery: seconds."""
    env = dict(os.environ, WALVAULT_CONFIG=conf)
    with open(os.path.join(pgdata, "postgresql.conf"), "a") as f:
        f.write(f"\nport = {PORT}\nunix_socket_directories = '{w}'\narchive_mode = off\n")
    t0 = time.time()
    h.as_pg([f"{h.PG_BIN}/pg_ctl", "-D", pgdata, "-l", os.path.join(w, f"rto-{tag}.log"), "-w", "-t", "7200", "start"],
            timeout=7300, env=env)
    c = h.Cluster(w, "rto-restored", PORT)
    c.pgdata = pgdata
    while c.psql("SELECT pg_is_in_recovery()", capture=True) != "f":
        time.sleep(0.2)
    seconds = time.time() - t0
    c.stop()
    return seconds


def change_one_percent(pgdata):
    rels = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(pgdata, "base")) for f in fs
                  if f.isdigit() and os.path.getsize(os.path.join(d, f)) >= 8192)
    picked = random.Random(15).sample(rels, max(1, len(rels) // 100))
    for p in picked:
        with open(p, "r+b") as f:
            f.seek(8192 - 200)
            f.write(b"Z" * 100)
    return len(picked), len(rels)


def warm_page_cache(pgdata):
    """Read every file under `pgdata` once (into the page cache)."""
    for d, _, fs in os.walk(pgdata):
        for f in fs:
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as src:
                    while src.read(8 << 20):
                        pass


def device_read_bytes(path):
    """Bytes read so far from the block device holding `path` (/proc/diskstats), or None."""
    try:
        st = os.stat(path)
        major, minor = os.major(st.st_dev), os.minor(st.st_dev)
        with open("/proc/diskstats") as f:
            for line in f:
                cols = line.split()
                if int(cols[0]) == major and int(cols[1]) == minor:
                    return int(cols[5]) * 512
    except (OSError, ValueError, IndexError):
        pass
    return None


def read_during(path, fn):
    """fn()'s result and the bytes read from `path`'s device meanwhile (None if unknown)."""
    before = device_read_bytes(path)
    out = fn()
    after = device_read_bytes(path)
    return out, (after - before if before is not None and after is not None else None)


def drop_page_cache():
    """Write back and drop the page cache (root only): True when dropped."""
    subprocess.run(["sync"], timeout=600)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def verify_part(ctx, w, endpoint):
    """Many backups and WAL objects on a small cluster with 1 MB segments."""
    backups, objects = (3, 200) if ctx.quick else (30, 10_000)
    cache = h.mkdir_pg(os.path.join(w, "rto-vcache"))
    conf = conf_file(os.path.join(w, "rto-verify.conf"), endpoint, ctx, cache, env="verify")
    c = h.Cluster(w, "rto-verify", VPORT, f"wal_level = replica\narchive_mode = on\narchive_command = 'WALVAULT_CONFIG={conf} "
                  f"{h.BIN}/wal-push %p'\n")
    h.as_pg([f"{h.PG_BIN}/initdb", "-D", c.pgdata, "-U", "postgres", "--auth=trust", "--no-sync", "--wal-segsize=1"])
    with open(os.path.join(c.pgdata, "postgresql.conf"), "a") as f:
        f.write(f"listen_addresses = ''\nunix_socket_directories = '{w}'\nport = {VPORT}\n{c.extra}\n")
    c.start()
    env = dict(os.environ, WALVAULT_CONFIG=conf, PGHOST=w, PGPORT=str(VPORT), PGUSER="postgres", PGDATA=c.pgdata)
    try:
        c.pgbench("-i", "-s", "1", "-q")
        c.psql("CREATE TABLE tick(i int)")
        for i in range(objects):
            c.psql("INSERT INTO tick VALUES (1); SELECT pg_switch_wal()")
            if i % (objects // backups) == objects // backups - 1:
                h.checked(h.measure([f"{h.BIN}/base-backup", "--json"], env=env, cwd=w, timeout=3600), "base-backup")
        wait_archived(c)
        runs = []
        for _ in range(2):
            r = h.checked(h.measure([f"{h.BIN}/walvault", "verify", "--json"], env=env, cwd=w, timeout=7200, capture=True), "verify")
            rep = json.loads(r["stdout"])
            runs.append({"wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "status": rep["status"], "scope": rep["scope"],
                         "wal_files": rep["wal"]["files"], "backups": len(rep["backups"])})
            for _ in range(5):
                c.psql("INSERT INTO tick VALUES (1); SELECT pg_switch_wal()")
            wait_archived(c)
        st = h.checked(h.measure([f"{h.BIN}/walvault", "status", "--json"], env=env, cwd=w, capture=True), "status")
        status = json.loads(st["stdout"])
        return {"backups": backups, "wal_objects": objects, "runs": runs,
                "status": {"requests": status["requests"], "source": status["source"], "wall_s": st["wall_s"]}}
    finally:
        c.stop("immediate")


def stage(ctx):
    w = ctx.work
    scale, segments = (20, 16) if ctx.quick else (1000, 96)
    port_file = os.path.join(w, "rto-s3.port")
    server = os.path.join(h.REPO_ROOT, "scripts", "s3-test-server.sh")
    r = subprocess.run([server, "start", port_file], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        return {"error": f"S3 test server did not start: {r.stderr[-500:]}"}
    endpoint = r.stdout.strip().splitlines()[-1]
    # Credentials come from the environment (the servers started below inherit it); the S3
    # test server accepts any.
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="benchbench", AWS_EC2_METADATA_DISABLED="true")
    subprocess.run(["curl", "-fsS", "-X", "PUT", f"{endpoint}/rto"], check=True, timeout=30, capture_output=True)
    proxy_pid = None
    out = {"scale": scale, "segments": segments, "jobs": os.cpu_count()}
    try:
        cache = h.mkdir_pg(os.path.join(w, "rto-cache"))
        direct = conf_file(os.path.join(w, "rto-direct.conf"), endpoint, ctx, cache)
        c = h.Cluster(w, "rto", PORT, f"wal_level = replica\narchive_mode = on\nmax_wal_size = 4GB\n"
                      f"archive_command = 'WALVAULT_CONFIG={direct} {h.BIN}/wal-push %p'\n").init()
        c.start()
        env = dict(os.environ, WALVAULT_CONFIG=direct, PGHOST=w, PGPORT=str(PORT), PGUSER="postgres", PGDATA=c.pgdata)
        c.pgbench("-i", "-s", str(scale), "-q")
        out["cluster_bytes"] = int(c.psql("SELECT sum(pg_database_size(oid)) FROM pg_database", capture=True))
        h.checked(h.measure([f"{h.BIN}/base-backup", "--json"], env=env, cwd=w, timeout=7200), "base-backup")
        lsn0 = c.psql("SELECT pg_current_wal_lsn()", capture=True)
        while int(c.psql(f"SELECT floor((pg_current_wal_lsn() - '{lsn0}') / 16777216)::int", capture=True)) < segments:
            c.pgbench("-n", "-T", "10", "-c", "2")
        wait_archived(c)
        c.stop()
        h.log(f"rto: cluster of {out['cluster_bytes'] / 1e9:.1f} GB, {segments} segments after the backup")
        rdir = h.mkdir_pg(os.path.join(w, "rto-restore"))
        # Full restore, then the same directory (as the backup left it) with 1% of its relation
        # files changed, restored with --delta, then replayed to the end.
        prep, full_s = prepare(w, rdir, direct, "full")
        full_sync_s = sync_seconds()
        # Cold: the page cache dropped first (a damaged volume, a restore on another day); then
        # warm: the same change again, right after (the directory was just read).
        changed, rels = change_one_percent(rdir)
        cold = drop_page_cache()
        (dout, delta_s), cold_read = read_during(rdir, lambda: prepare(w, rdir, direct, "delta", "--delta"))
        change_one_percent(rdir)
        # Warm: the data directory in the page cache, as on a host whose server just ran (the
        # delta reads a cold piece with O_DIRECT, so the cold run above leaves nothing cached):
        # the cache emptied (the source cluster's pages held a third of it) and the directory
        # read once, untimed. The bytes read from the device during the run say how warm it was.
        drop_page_cache()
        warm_page_cache(rdir)
        (wout, warm_s), warm_read = read_during(rdir, lambda: prepare(w, rdir, direct, "delta-warm", "--delta"))
        # Hot: once more right after (every page now read twice, as the pages of a server that
        # ran are; the kernel's first touch of a page read once costs more).
        change_one_percent(rdir)
        (hout, hot_s), hot_read = read_during(rdir, lambda: prepare(w, rdir, direct, "delta-hot", "--delta"))
        out["delta"] = {"full_s": full_s, "delta_s": delta_s, "ratio": delta_s / full_s, "changed_files": changed,
                        "relation_files": rels, "report": dout.get("delta"), "target_ratio": 0.15, "cold": cold,
                        "warm_s": warm_s, "warm_ratio": warm_s / full_s, "warm_report": wout.get("delta"),
                        "hot_s": hot_s, "hot_ratio": hot_s / full_s, "hot_report": hout.get("delta"),
                        "full_sync_s": full_sync_s, "device_read_bytes": {"cold": cold_read, "warm": warm_read, "hot": hot_read}, "phases_ms": {"full": prep.get("phases_ms"), "cold": dout.get("phases_ms"),
                                                                  "warm": wout.get("phases_ms"), "hot": hout.get("phases_ms")}}
        h.log(f"rto: full restore {full_s:.1f} s, delta {delta_s:.1f} s ({'cold' if cold else 'page cache not dropped'}), "
              f"warm {warm_s:.1f} s, hot {hot_s:.1f} s ({changed} of {rels} relation files changed)")
        replay_direct = replay(w, rdir, direct, "direct")
        proxy_pid, shaped_url = start_shaped(w, int(endpoint.rsplit(":", 1)[1]), 30, 100_000_000)
        shaped = conf_file(os.path.join(w, "rto-shaped.conf"), shaped_url, ctx, h.mkdir_pg(os.path.join(w, "rto-cache-shaped")))
        _, shaped_prep_s = prepare(w, rdir, shaped, "shaped", "--force")
        replay_shaped = replay(w, rdir, shaped, "shaped")
        out["pitr"] = {"segments": segments, "loopback": {"prepare_s": full_s, "replay_s": replay_direct,
                                                           "seg_per_s": segments / replay_direct},
                       "shaped": {"delay_ms": 30, "rate_mb_s": 100, "prepare_s": shaped_prep_s, "replay_s": replay_shaped,
                                  "seg_per_s": segments / replay_shaped},
                       "ratio": replay_direct / replay_shaped, "target_ratio": 0.9,
                       "prefetch": os.environ.get("WALVAULT_FETCH_PREFETCH", "default (4)"), "jobs": "default (cores)",
                       "files": prep.get("files")}
        h.log(f"rto: replay {replay_direct:.1f} s on loopback, {replay_shaped:.1f} s shaped")
        if "verify" in os.environ.get("BENCH_RTO_PARTS", "verify"):
            out["verify"] = verify_part(ctx, w, endpoint)
        else:
            prev = h.previous_results("rto") or {}
            if prev.get("verify"):
                out["verify"] = dict(prev["verify"], reused_from=prev["verify"].get("reused_from") or prev.get("_date"))
    finally:
        if proxy_pid:
            h.stop_pid(proxy_pid)
        subprocess.run([server, "stop", port_file], timeout=60, capture_output=True)
    return out


def render(doc, f, table, target, machine_line):
    """The BENCHMARKS.md section of the rto stage (report.py's helpers passed in)."""
    md = ["## RTO at scale (issue 15)", ""]
    r = doc.get("results") if doc else None
    if not r:
        return md + [f"Not run (`scripts/bench.sh --stages rto`){': ' + doc['error'] if doc and doc.get('error') else ''}.", ""]
    quick = " A `--quick` run: the targets are stated for the full run (15 GB, 30 backups, 10,000 WAL objects)." if doc.get("quick") else ""
    md += [machine_line(doc), "",
           f"A pgbench cluster of scale {r['scale']} ({f(r.get('cluster_bytes', 0) / 1e9, '{:.1f}')} GB), a base backup and "
           f"{r['segments']} segments of WAL after it, on the S3 test server; restores with `--jobs` at its default "
           f"({r['jobs']} cores here).{quick}", ""]
    d, p, v = r.get("delta"), r.get("pitr"), r.get("verify")
    if d:
        rep = d.get("report") or {}
        md.append(table(["restore", "seconds", "kept", "fetched", "removed"],
                        [["full (`pitr-prepare` into an empty directory)", f(d["full_s"]), "-", "-", "-"],
                         [f"`--delta`, {d['changed_files']} of {d['relation_files']} relation files changed", f(d["delta_s"]),
                          f(rep.get("kept_bytes", 0) / 1e6, "{:.0f} MB"), f(rep.get("fetched_bytes", 0) / 1e6, "{:.0f} MB"),
                          f(rep.get("removed_bytes", 0) / 1e6, "{:.0f} MB")]]))
        if "warm_s" in d:
            md[-1:] = [table(["restore", "seconds", "kept", "fetched", "removed"],
                             [["full (`pitr-prepare` into an empty directory)", f(d["full_s"]), "-", "-", "-"],
                              [f"`--delta`, {d['changed_files']} of {d['relation_files']} relation files changed, "
                               f"{'page cache dropped first' if d.get('cold') else 'page cache as it was'}", f(d["delta_s"]),
                               f(rep.get("kept_bytes", 0) / 1e6, "{:.0f} MB"), f(rep.get("fetched_bytes", 0) / 1e6, "{:.0f} MB"),
                               f(rep.get("removed_bytes", 0) / 1e6, "{:.0f} MB")],
                              ["`--delta` again after the same change (the page cache emptied, then the directory read into it once, untimed)",
                               f(d["warm_s"]), "", "", ""]]
                             + ([["`--delta` once more right after the same change (hot: every page read twice)", f(d["hot_s"]), "", "", ""]]
                                if "hot_s" in d else []))]
            md += ["", target(d["warm_ratio"] <= d["target_ratio"],
                              f"delta restore with the data directory in the page cache: {d['warm_ratio']:.1%} of the full "
                              "restore's time <= 15%", f"{(d['warm_ratio'] - d['target_ratio']) * 100:.1f} points")]
            if "hot_s" in d:
                md += [target(d["hot_ratio"] <= d["target_ratio"],
                              f"delta restore with the data directory hot in the page cache: {d['hot_ratio']:.1%} of the full "
                              "restore's time <= 15%", f"{(d['hot_ratio'] - d['target_ratio']) * 100:.1f} points")]
        md += [target(d["ratio"] <= d["target_ratio"], f"delta restore {d['ratio']:.0%} of the full restore's time <= 15%"
                      + (" (cold: it reads every byte of the data directory from the disk)" if d.get("cold") else ""),
                      f"{d['ratio'] - d['target_ratio']:.0%}"), ""]
        if d.get("full_sync_s") is not None:
            md += [f"The full restore ends with its {f(r.get('cluster_bytes', 0) / 1e9, '{:.1f}')} GB in the page cache: "
                   f"`sync` right after it took {f(d['full_sync_s'])} s more (PostgreSQL syncs the data directory when it "
                   f"starts); with it the cold delta restore is {d['delta_s'] / (d['full_s'] + d['full_sync_s']):.0%} of the "
                   "full restore.", ""]
        dev = d.get("device_read_bytes") or {}
        if dev.get("cold") is not None and dev.get("warm") is not None:
            hot = f", {dev['hot'] / 1e9:.2f} GB hot" if dev.get("hot") is not None else ""
            own = [(k, (d.get(r) or {}).get("read_from_device_bytes")) for k, r in
                   (("cold", "report"), ("warm", "warm_report"), ("hot", "hot_report"))]
            own = ", ".join(f"{v / 1e9:.2f} GB {k}" for k, v in own if v is not None)
            md += [f"Read from the disk during the runs: {dev['cold'] / 1e9:.1f} GB cold, {dev['warm'] / 1e9:.2f} GB warm{hot}"
                   + (f"; of them the comparison's reads straight from the device (its report): {own}" if own else "") + ".", ""]
        ph = d.get("phases_ms") or {}
        rows = [[k, " ".join(f"{n} {ms}," for n, ms in v.items()).rstrip(",")] for k, v in ph.items() if v]
        if rows:
            md += ["Where `pitr-prepare` spent its time (ms; the archive side - `wal-list`, `wal-check` - runs while "
                   "the data directory is compared, `compare` is what was left of it):", "",
                   table(["run", "phases (ms)"], rows), ""]
    if p:
        lo, sh = p["loopback"], p["shaped"]
        md.append(table(["PITR", "pitr-prepare s", "replay s", "segments/s"],
                        [["loopback", f(lo["prepare_s"]), f(lo["replay_s"]), f(lo["seg_per_s"], "{:.2f}")],
                         [f"shaped: {sh['delay_ms']} ms per request, {sh['rate_mb_s']} MB/s per connection", f(sh["prepare_s"]),
                          f(sh["replay_s"]), f(sh["seg_per_s"], "{:.2f}")]]))
        md += ["", target(p["ratio"] >= p["target_ratio"], f"shaped replay rate {p['ratio']:.2f}x loopback >= 0.9x "
                          f"(prefetch {p['prefetch']}, parallel restore {p['jobs']})", f"{p['target_ratio'] - p['ratio']:.2f}x"), ""]
    if v:
        rows = [[f"run {i + 1}", f(x["wall_s"]), len(x["scope"]["backups_read"]), f(x["scope"]["bytes_read"] / 1e6, "{:.0f} MB"),
                 x["scope"]["wal_checked"], len(x["scope"]["backups_due"])] for i, x in enumerate(v["runs"])]
        reused = f" (measured by the run of {v['reused_from']}; this run redid only the restores)" if v.get("reused_from") else ""
        md += [f"`walvault verify` on {v['backups']} backups and {v['wal_objects']} WAL objects (1 MB segments){reused}:", "",
               table(["verify", "seconds", "backups read", "bytes read", "WAL objects decoded", "backups due"], rows), ""]
        second = v["runs"][-1]["scope"]
        md.append(target(second["wal_checked"] < v["runs"][0]["scope"]["wal_checked"] and len(second["backups_read"]) <= 1,
                         "the second run reads only what is new (the newest backup and the WAL since)", "more"))
        req = v["status"]["requests"]
        n = sum(req.values())
        md += [target(n <= 3, f"`walvault status` sent {n} requests ({req}) <= 3", f"{n - 3}"), ""]
    return md
