"""The `scale` stage of the benchmark harness (issue 14): a large pgbench cluster (scale 1000,
about 15 GB; --quick: scale 30) backed up by base-backup and restored by pitr-prepare (MB/s,
CPU, max RSS, the spool's peak size), the same backup taken from a streaming standby, and
the cost of a resume: a backup SIGKILLed once half its parts are stored, then run again
(bytes read again by the second run beyond what the first had not stored, against the
backup's size). Imported by harness.py (run as `--stages scale`), which it reuses.
"""
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import harness as h

PORTS = {"primary": 54344, "standby": 54345}


def spool_peak(spool, stop):
    """The largest size the spool directory reached, sampled every 100 ms until `stop`."""
    peak = [0]

    def sample():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], h.du(spool))
            except OSError:
                pass
            time.sleep(0.1)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    return peak, t


def timed_backup(name, cmd, env, cwd, spool, shell=False):
    stop = threading.Event()
    peak, t = spool_peak(spool, stop)
    r = h.measure(cmd[0] if shell else cmd, env=env, cwd=cwd, shell=shell, timeout=14400, capture=True)
    stop.set()
    t.join()
    h.checked(r, name)
    meta = json.loads(r["stdout"])
    row = {"tool": name, "wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "bytes": meta["bytes"],
           "mb_per_s": meta["bytes"] / 1e6 / r["wall_s"], "maxrss_mib": r["maxrss_kib"] / 1024, "spool_peak_mib": peak[0] / 2**20,
           "parts": len(meta["parts"]), "from_standby": meta.get("from_standby", False)}
    h.log(f"scale {name}: {row['mb_per_s']:.0f} MB/s of {meta['bytes'] / 1e6:.0f} MB, {r['cpu_s']:.0f} CPU s, "
          f"{row['maxrss_mib']:.0f} MiB RSS, spool peak {row['spool_peak_mib']:.0f} MiB")
    return row, meta


def switch_while(c, done):
    """pg_switch_wal on the primary every second until `done` (a standby backup waits for
    the primary to archive its last segment)."""
    while not done.is_set():
        time.sleep(1)
        try:
            c.psql("SELECT pg_switch_wal()", timeout=30)
        except subprocess.SubprocessError:
            pass


def killed_at_half(cmd, env, cwd):
    """Run a backup, SIGKILL it once half its parts are stored; the bytes of the parts stored."""
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, **h.pg_kw())
    stored = 0
    for line in p.stderr:
        if ": part " in line and "/" in line:
            k, n = line.split(": part ", 1)[1].split(":", 1)[0].split("/")
            stored += int(line.rsplit(" files, ", 1)[1].split(" -> ", 1)[0])
            if int(k) * 2 >= int(n):
                os.killpg(p.pid, signal.SIGKILL)
                break
    p.wait()
    return stored


def stage_scale(ctx):
    w = ctx.work
    scale = 30 if ctx.quick else 1000
    arch = "wal_level = replica\narchive_mode = on\nmax_wal_size = 8GB\nhot_standby = on\nmax_wal_senders = 4\n"
    c = h.Cluster(w, "scale", PORTS["primary"], arch).init()
    repo = h.mkdir_pg(os.path.join(w, "scale-repo"))
    wconf = os.path.join(w, "scale-walvault.conf")
    with open(wconf, "w") as f:
        f.write(f"WALVAULT_REPO=file://{repo}\nWALVAULT_KEY_FILE={ctx.key}\nWALVAULT_ENV=bench\n")
    h.chown(wconf)
    with open(os.path.join(c.pgdata, "postgresql.conf"), "a") as f:
        f.write(f"archive_command = 'WALVAULT_CONFIG={wconf} WALVAULT_LOG=warn {h.BIN}/wal-push %p'\n")
    env = h.walvault_env(w, repo, ctx.key, {"PGHOST": w, "PGUSER": "postgres", "PGDATABASE": "postgres",
                                            "WALVAULT_PROGRESS_INTERVAL": "3600", "WALVAULT_LOG": "info"})
    spool = h.mkdir_pg(os.path.join(w, "scale-spool"))
    bb = [f"{h.BIN}/base-backup", "--json", "--checkpoint", "fast", "--spool-dir", spool]
    rows, standby, resume, size, load_s = [], None, None, None, None
    c.start()
    try:
        t0 = time.time()
        c.pgbench("-i", "-s", str(scale), "-q", timeout=14400)
        c.psql("CHECKPOINT")
        load_s = time.time() - t0
        size = int(c.psql("SELECT sum(pg_database_size(oid)) FROM pg_database", capture=True))
        h.log(f"scale: cluster of {size / 1e6:.0f} MB (pgbench scale {scale}, loaded in {load_s:.0f} s)")
        penv = dict(env, PGPORT=str(c.port), PGDATA=c.pgdata)
        row, meta = timed_backup("base-backup (primary)", bb, penv, w, spool)
        rows.append(row)
        rdir = h.mkdir_pg(os.path.join(w, "scale-restore"))
        r = h.measure([f"{h.BIN}/pitr-prepare", "--json", "--pgdata", rdir, "--immediate", "--backup", meta["name"]],
                      env=penv, cwd=w, timeout=14400, capture=True)
        h.checked(r, "pitr-prepare")
        rows.append({"tool": "pitr-prepare", "wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "bytes": meta["bytes"],
                     "mb_per_s": meta["bytes"] / 1e6 / r["wall_s"], "maxrss_mib": r["maxrss_kib"] / 1024})
        h.log(f"scale pitr-prepare: {rows[-1]['mb_per_s']:.0f} MB/s, {rows[-1]['maxrss_mib']:.0f} MiB RSS")
        shutil.rmtree(rdir, ignore_errors=True)

        standby = h.Cluster(w, "scale-standby", PORTS["standby"])
        h.as_pg([f"{h.PG_BIN}/pg_basebackup", "-h", w, "-p", str(c.port), "-U", "postgres", "-D", standby.pgdata,
                 "-R", "-X", "stream", "-c", "fast"], timeout=14400)
        with open(os.path.join(standby.pgdata, "postgresql.conf"), "a") as f:
            f.write(f"port = {standby.port}\narchive_mode = off\n")
        standby.start()
        done = threading.Event()
        switcher = threading.Thread(target=switch_while, args=(c, done), daemon=True)
        switcher.start()
        senv = dict(env, PGPORT=str(standby.port), PGDATA=standby.pgdata)
        try:
            row, _ = timed_backup("base-backup (standby)", bb, senv, w, spool)
        finally:
            done.set()
            switcher.join()
        rows.append(row)

        c.psql("UPDATE pgbench_branches SET bbalance = bbalance + 1")
        time.sleep(2)
        stored_before = killed_at_half(bb, penv, w)
        errf = os.path.join(w, "scale-resume.err")
        row, meta = timed_backup("base-backup (resumed after a kill at 50%)", [" ".join(bb) + f" 2> {errf}"], penv, w, spool,
                                 shell=True)
        rows.append(row)
        with open(errf) as f:
            line = next((l for l in f if "resuming backup " in l), "")
        # `resuming backup NAME: R of N parts (B bytes) reused`
        reused = int(line.split(" parts (", 1)[1].split(" bytes", 1)[0]) if " parts (" in line else 0
        redone = max(stored_before - reused, 0)
        resume = {"stored_before_kill": stored_before, "reused_bytes": reused, "redone_bytes": redone,
                  "backup_bytes": meta["bytes"], "redone_fraction": redone / meta["bytes"], "line": line.strip()}
        h.log(f"scale resume: {reused / 1e6:.0f} MB reused of {stored_before / 1e6:.0f} MB stored before the kill; "
              f"{redone / 1e6:.0f} MB redone ({100 * redone / meta['bytes']:.1f}% of the backup)")
    finally:
        if standby:
            standby.stop("immediate")
            shutil.rmtree(standby.pgdata, ignore_errors=True)
        c.stop("immediate")
        shutil.rmtree(c.pgdata, ignore_errors=True)
    return {"scale": scale, "cluster_bytes": size, "load_s": load_s, "rows": rows, "resume": resume}
