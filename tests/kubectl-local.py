#!/usr/bin/env python3
"""A stand-in for kubectl that runs docs/runbook.md's shell blocks on one machine.

bins/tests/integration/deploy.rs puts this first on PATH as `kubectl`, with a local
PostgreSQL cluster as the database pod. It substitutes the Kubernetes wrapper and nothing
else: the command a block runs inside a container, or the command a CronJob or Job of
deploy/ runs, is run here as a local process with the block's environment (which stands in
for the Secrets), volumes mapped to local directories.

  exec [-i] [-t] [-n NS] [-c C] TARGET -- CMD...   run CMD here (the database container)
  create job --from=cronjob/NAME JOB [-n NS] [-o name]
                                                    run cronjob NAME's container from deploy/
  create -f FILE|- [-n NS] [-o name]               run a Job manifest's container
  logs [-f] [-n NS] [--pod-running-timeout=D] job/NAME
  wait job/NAME --for=condition=complete|failed [--timeout=D] [-n NS]
  wait --for=delete pod -l SELECTOR               the database's pod: its server is stopped
  scale deployment NAME... | deployment/NAME --replicas=N
                                                    the database: stop or start the local cluster;
                                                    other Deployments (the application) are only named
  rollout status deployment/NAME                   the database: wait until it accepts connections

Anything else fails with "not supported by the local runner". Environment:
  KUBECTL_LOCAL_STATE    directory for job logs and scratch volumes (required)
  KUBECTL_LOCAL_DEPLOY   the deploy/ directory (CronJobs are looked up there)
  KUBECTL_LOCAL_VOLUMES  JSON {"claimName": "local dir"} for PersistentVolumeClaims
  KUBECTL_LOCAL_DB       the database Deployment's name (default mykadoo-postgresql)
  PGDATA, PG_BIN         the local cluster, for scale
"""
import fnmatch
import glob
import json
import os
import re
import secrets
import subprocess
import sys
import time

import yaml

STATE = os.environ.get("KUBECTL_LOCAL_STATE") or sys.exit("kubectl (local): KUBECTL_LOCAL_STATE is not set")
DEPLOY = os.environ.get("KUBECTL_LOCAL_DEPLOY", "deploy")
DB = os.environ.get("KUBECTL_LOCAL_DB", "mykadoo-postgresql")
JOBS = os.path.join(STATE, "jobs")
os.makedirs(JOBS, exist_ok=True)


def fail(msg, code=2):
    print(f"kubectl (local): {msg}", file=sys.stderr)
    sys.exit(code)


def split_flags(args, with_value=("-n", "--namespace", "-c", "--container", "-o", "--output", "-f", "--filename",
                                  "--for", "--timeout", "--replicas", "--from", "--pod-running-timeout")):
    """Positional arguments and a dict of flags (--x=y and -x y forms; boolean flags get True)."""
    pos, flags, i = [], {}, 0
    while i < len(args):
        a = args[i]
        if a == "--":
            pos.append(a)
            pos.extend(args[i + 1:])
            break
        if a.startswith("--") and "=" in a:
            k, v = a.split("=", 1)
            flags[k] = v
        elif a in with_value:
            if i + 1 >= len(args):
                fail(f"flag {a} needs a value")
            flags[a] = args[i + 1]
            i += 1
        elif a.startswith("-") and len(a) > 1:
            flags[a] = True
        else:
            pos.append(a)
        i += 1
    return pos, flags


def manifests():
    docs = []
    for path in sorted(glob.glob(os.path.join(DEPLOY, "*.yaml"))):
        if os.path.basename(path) == "kustomization.yaml":
            continue
        with open(path) as f:
            docs.extend(d for d in yaml.safe_load_all(f) if d)
    return docs


def relocate(value, mounts):
    """A path under a volume's mount path, alone or as --flag=PATH or KIND=PATH, moved to the local directory."""
    if "=" in value and not value.startswith("/"):
        flag, _, rest = value.partition("=")
        return flag + "=" + relocate(rest, mounts)
    for mount, local in mounts:
        if value == mount or value.startswith(mount + "/"):
            return local + value[len(mount):]
    return value


def expand(value, env):
    """Kubernetes $(VAR) expansion ($$ escapes)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def run_pod(job_name, pod_spec):
    containers = pod_spec["containers"]
    if len(containers) != 1:
        fail(f"job {job_name}: one container expected")
    c = containers[0]
    if "command" not in c:
        fail(f"job {job_name}: the container needs an explicit command")
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    claims = json.loads(os.environ.get("KUBECTL_LOCAL_VOLUMES", "{}"))
    mounts = []
    for m in c.get("volumeMounts", []):
        v = volumes[m["name"]]
        if "persistentVolumeClaim" in v:
            claim = v["persistentVolumeClaim"]["claimName"]
            if claim not in claims:
                fail(f"job {job_name}: no local directory for volume claim {claim} (KUBECTL_LOCAL_VOLUMES)")
            local = claims[claim]
        else:
            # Short paths: a PostgreSQL socket under a scratch volume must fit in 107 bytes.
            base = os.path.join(STATE, "v")
            os.makedirs(base, exist_ok=True)
            local = os.path.join(base, str(len(os.listdir(base))))
            os.makedirs(local)
        mounts.append((m["mountPath"].rstrip("/"), local))
    mounts.sort(key=lambda m: -len(m[0]))
    env = dict(os.environ)
    for e in c.get("env", []):
        if "value" in e and e["name"] not in os.environ:
            env[e["name"]] = relocate(expand(str(e["value"]), env), mounts)
    cmd = [relocate(expand(a, env), mounts) for a in c["command"] + c.get("args", [])]
    log_path = os.path.join(JOBS, job_name + ".log")
    with open(log_path, "wb") as log:
        try:
            rc = subprocess.call(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=STATE)
        except OSError as e:  # as a container runtime reports a command it cannot start
            log.write(f"exec {cmd[0]}: {e.strerror}\n".encode())
            rc = 127
    with open(os.path.join(JOBS, job_name + ".json"), "w") as f:
        json.dump({"name": job_name, "command": cmd, "exit": rc, "at": time.time()}, f)


def created(name, flags):
    print(f"job.batch/{name}" if flags.get("-o") == "name" else f"job.batch/{name} created")


def cmd_create(args):
    pos, flags = split_flags(args)
    if pos[:1] == ["job"] and "--from" in flags:
        kind, _, source = flags["--from"].partition("/")
        if kind not in ("cronjob", "cronjobs", "cj") or len(pos) != 2:
            fail("create job: expected --from=cronjob/NAME JOBNAME")
        for d in manifests():
            if d.get("kind") == "CronJob" and d["metadata"]["name"] == source:
                run_pod(pos[1], d["spec"]["jobTemplate"]["spec"]["template"]["spec"])
                return created(pos[1], flags)
        fail(f'cronjobs.batch "{source}" not found', 1)
    if "-f" in flags or "--filename" in flags:
        path = flags.get("-f", flags.get("--filename"))
        text = sys.stdin.read() if path == "-" else open(path).read()
        for d in (d for d in yaml.safe_load_all(text) if d):
            if d.get("kind") != "Job":
                fail(f"create -f: only Jobs are run locally, not {d.get('kind')}")
            meta = d["metadata"]
            name = meta.get("name") or meta["generateName"] + secrets.token_hex(3)[:5]
            run_pod(name, d["spec"]["template"]["spec"])
            created(name, flags)
        return None
    fail("create: only `create job --from=cronjob/NAME` and `create -f` are supported by the local runner")


def find_job(ref):
    kind, _, pattern = ref.partition("/")
    if kind not in ("job", "jobs", "job.batch", "jobs.batch") or not pattern:
        fail(f"{ref}: only job/NAME is supported by the local runner")
    names = [os.path.basename(p)[:-5] for p in glob.glob(os.path.join(JOBS, "*.json"))]
    matches = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if not matches:
        fail(f'jobs.batch "{pattern}" not found', 1)
    job = max((json.load(open(os.path.join(JOBS, n + ".json"))) for n in matches), key=lambda j: j["at"])
    return job


def cmd_logs(args):
    pos, _ = split_flags(args, with_value=("-n", "--namespace", "-c", "--container", "--pod-running-timeout",
                                           "--tail", "--since"))
    job = find_job(pos[0] if pos else "")
    with open(os.path.join(JOBS, job["name"] + ".log"), "rb") as f:
        sys.stdout.buffer.write(f.read())


def cmd_wait(args):
    pos, flags = split_flags(args, with_value=("-n", "--namespace", "--for", "--timeout", "-l", "--selector"))
    want = flags.get("--for", "")
    if want == "delete":
        # Pods going away: the database's when the selector names it (its server must be
        # stopped by then), the application's (not here) at once.
        selector = flags.get("-l", flags.get("--selector", ""))
        if DB in selector and pg_ctl("status") == 0:
            fail(f"timed out waiting for the condition on pods ({selector}): the database still runs", 1)
        print("pod condition met")
        return
    job = find_job(pos[0] if pos else "")
    done = "complete" if job["exit"] == 0 else "failed"
    if want not in ("condition=complete", "condition=failed"):
        fail(f"wait --for={want}: only condition=complete and condition=failed are supported")
    if want != "condition=" + done:
        fail(f"timed out waiting for the condition on jobs/{job['name']} (it {done}, exit status {job['exit']})", 1)
    print(f"job.batch/{job['name']} condition met")


def deployments(pos):
    names = []
    for p in pos:
        if p in ("deployment", "deployments", "deploy"):
            continue
        kind, sep, name = p.partition("/")
        names.append(name if sep else p)
    return names


def pg_ctl(*args):
    pg_bin = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
    return subprocess.call([os.path.join(pg_bin, "pg_ctl"), "-D", os.environ["PGDATA"], *args],
                           stdout=subprocess.DEVNULL)


def cmd_scale(args):
    pos, flags = split_flags(args)
    replicas = flags.get("--replicas")
    if replicas not in ("0", "1") and DB in deployments(pos):
        fail("scale: the database runs 0 or 1 replicas")
    for name in deployments(pos):
        if name == DB:
            running = pg_ctl("status") == 0
            if replicas == "0" and running:
                if pg_ctl("-w", "-t", "120", "-m", "fast", "stop") != 0:
                    fail("could not stop the local database", 1)
            elif replicas == "1" and not running:
                log = os.path.join(STATE, "database.log")
                if pg_ctl("-w", "-t", "600", "-l", log, "start") != 0:
                    fail(f"could not start the local database; see {log}", 1)
        print(f"deployment.apps/{name} scaled")


def cmd_rollout(args):
    pos, flags = split_flags(args)
    if pos[:1] != ["status"]:
        fail("rollout: only `rollout status` is supported by the local runner")
    for name in deployments(pos[1:]):
        if name == DB and pg_ctl("status") != 0:
            fail(f'deployment "{name}" has no ready replica', 1)
        print(f'deployment "{name}" successfully rolled out')


def cmd_exec(args):
    if "--" not in args:
        fail("exec: expected TARGET -- COMMAND...")
    cmd = args[args.index("--") + 1:]
    os.execvp(cmd[0], cmd)


def main():
    args = sys.argv[1:]
    if not args:
        fail("no command")
    handlers = {"exec": cmd_exec, "create": cmd_create, "logs": cmd_logs, "wait": cmd_wait,
                "scale": cmd_scale, "rollout": cmd_rollout}
    if args[0] not in handlers:
        fail(f"`kubectl {args[0]}` is not supported by the local runner")
    handlers[args[0]](args[1:])


if __name__ == "__main__":
    main()
