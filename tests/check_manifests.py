#!/usr/bin/env python3
"""The runbook's rules for deploy/, checked on the rendered manifests (bins/tests/integration/deploy.rs).

Usage: check_manifests.py RENDERED.yaml JOB.yaml...   (RENDERED: `kubectl kustomize deploy`)
Prints one line per problem and exits 1 if there is any; prints the containers' commands as
JSON on stdout otherwise ({"kind/name": [command...]}), for the test to check their flags.
"""
import json
import re
import sys

import yaml

SECRETS = {"mykadoo-backup-secrets", "mykadoo-backup-encryption-key", "mykadoo-db-credentials"}
SCHEDULES = {  # the runbook's schedule, UTC
    "mykadoo-db-backup": ("0 2 * * *", "backup-postgresql.sh"),
    "mykadoo-backup-verify": ("0 3 * * 0", "walvault verify --restore-test"),
    "mykadoo-files-backup": ("0 3 * * *", "backup-files.sh"),
    "mykadoo-backup-prune": (None, "walvault prune"),
    "mykadoo-backup-status": (None, "walvault-status.sh"),
}
problems = []


def problem(where, msg):
    problems.append(f"{where}: {msg}")


def load(paths):
    docs = []
    for p in paths:
        with open(p) as f:
            docs.extend((p, d) for d in yaml.safe_load_all(f) if d)
    return docs


def name_of(d):
    m = d["metadata"]
    return f"{d['kind']}/{m.get('name') or m.get('generateName')}"


def secret_refs(pod):
    refs = set()
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs.add(ref["name"])
        for e in c.get("envFrom", []):
            if "secretRef" in e:
                refs.add(e["secretRef"]["name"])
    for v in pod.get("volumes", []):
        if "secret" in v:
            refs.add(v["secret"]["secretName"])
    return refs


def check_pod(where, pod, accounts, commands):
    sa = pod.get("serviceAccountName")
    if sa not in accounts:
        problem(where, f"serviceAccountName {sa!r} is not one of the IRSA service accounts {sorted(accounts)}")
    sc = pod.get("securityContext", {})
    if not sc.get("runAsNonRoot") or not isinstance(sc.get("runAsUser"), int):
        problem(where, "pods run as the image's numeric non-root user (runAsNonRoot, runAsUser)")
    for ref in secret_refs(pod) - SECRETS:
        problem(where, f"references unknown Secret {ref}")
    for c in pod["containers"]:
        req = c.get("resources", {}).get("requests", {})
        if "cpu" not in req or "memory" not in req:
            problem(where, f"container {c['name']} has no cpu and memory requests")
        if not c.get("image", "").startswith("registry.example.com/mykadoo/walvault-postgres") \
                and not c.get("image") == "walvault-postgres":
            problem(where, f"container {c['name']} does not run the walvault image: {c.get('image')}")
        if "command" in c:
            commands[where] = c["command"] + c.get("args", [])


def main():
    rendered, jobs = sys.argv[1], sys.argv[2:]
    docs = load([rendered])
    accounts = set()
    for _, d in docs:
        if d["kind"] == "ServiceAccount":
            accounts.add(d["metadata"]["name"])
            if not d["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn", "").startswith("arn:aws:iam::"):
                problem(name_of(d), "no IRSA annotation eks.amazonaws.com/role-arn")
        if d["kind"] == "Secret":
            problem(name_of(d), "Secrets are referenced by name, never committed")
    commands = {}
    seen = set()
    for _, d in docs:
        where = name_of(d)
        if d["kind"] == "CronJob":
            seen.add(d["metadata"]["name"])
            spec = d["spec"]
            job = spec["jobTemplate"]["spec"]
            if spec.get("concurrencyPolicy") != "Forbid":
                problem(where, "concurrencyPolicy must be Forbid")
            if spec.get("timeZone") != "Etc/UTC":
                problem(where, "the runbook's times are UTC: timeZone: Etc/UTC")
            if not isinstance(job.get("backoffLimit"), int):
                problem(where, "no backoffLimit")
            if job["template"]["spec"].get("restartPolicy") != "Never":
                problem(where, "restartPolicy Never (a failed run is a failed Job, which alerts)")
            if not job.get("podFailurePolicy"):
                problem(where, "no podFailurePolicy for the exit codes that must not be retried")
            if spec.get("failedJobsHistoryLimit", 1) < 1:
                problem(where, "keep failed Jobs (failedJobsHistoryLimit >= 1) so the alert has something to show")
            want = SCHEDULES.get(d["metadata"]["name"])
            pod = job["template"]["spec"]
            check_pod(where, pod, accounts, commands)
            if want:
                schedule, command = want
                if schedule and spec["schedule"] != schedule:
                    problem(where, f"schedule {spec['schedule']!r}, the runbook says {schedule!r}")
                if not " ".join(pod["containers"][0]["command"]).startswith(command):
                    problem(where, f"command does not start with {command!r}")
        elif d["kind"] == "Deployment":
            check_pod(where, d["spec"]["template"]["spec"], accounts, commands)
        elif d["kind"] == "ConfigMap" and "postgresql.conf" in d.get("data", {}):
            conf = d["data"]["postgresql.conf"]
            for line in ("archive_mode = on", "archive_command = 'wal-push %p'", "wal_level = replica",
                         "restore_command = 'wal-fetch %f %p'"):
                if not re.search(r"^\s*" + re.escape(line) + r"\s*(#.*)?$", conf, re.M):
                    problem(where, f"postgresql.conf lacks `{line}`")
            m = re.search(r"^\s*archive_timeout\s*=\s*(\d+)\s*(#.*)?$", conf, re.M)
            if not m or not 0 < int(m.group(1)) <= 1800:
                problem(where, "archive_timeout must be set well inside the 1 h RPO (<= 1800 s)")
    for name in SCHEDULES:
        if name not in seen:
            problem("kustomization", f"CronJob {name} is missing")
    for path, d in load(jobs):
        where = f"{path}: {name_of(d)}"
        if d["kind"] != "Job":
            problem(where, "deploy/jobs/ holds Jobs only")
            continue
        if "generateName" not in d["metadata"]:
            problem(where, "use generateName, so the Job can be created again (kubectl create -f)")
        if not isinstance(d["spec"].get("backoffLimit"), int):
            problem(where, "no backoffLimit")
        check_pod(where, d["spec"]["template"]["spec"], accounts, commands)
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    json.dump(commands, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
