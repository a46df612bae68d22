"""The `scale` section of docs/BENCHMARKS.md (issue 14), from docs/benchmarks/scale.json and
the basebackup stage's figures it is held against."""


def section(scale, bb, f, table, target, machine_line):
    """Markdown lines for the scale stage (or a line saying how to run it)."""
    if not scale or not scale.get("results"):
        why = f"failed: {scale['error']}" if scale and scale.get("error") else "not run in this report"
        return ["## Scale (issue 14)", "", f"Stage `scale` {why}: `scripts/bench.sh --stages scale` (pgbench scale 1000, "
                "about 15 GB; needs about 3x that on disk for the cluster, its standby, the repository and a restore).", ""]
    res = scale["results"]
    md = ["## Scale (issue 14)", "", machine_line(scale), ""]
    if scale.get("quick"):
        md += ["> **Quick run**: pgbench scale 30 instead of 1000, on a shared and busy machine: a smoke test of the stage, "
               "not the 15 GB result.", ""]
    md.append(f"A pgbench cluster of {res['cluster_bytes'] / 1e6:,.0f} MB (`-s {res['scale']}`), loaded in {res['load_s']:.0f} s; "
              "every backup with `--checkpoint fast`; MB/s of base-backup's `bytes`.")
    md.append("")
    md.append(table(["run", "wall s", "CPU s", "MB/s", "max RSS MiB", "spool peak MiB", "parts"],
                    [[r["tool"], f(r["wall_s"]), f(r["cpu_s"]), f(r["mb_per_s"], "{:.0f}"), f(r["maxrss_mib"]),
                      f(r.get("spool_peak_mib")), r.get("parts", "")] for r in res["rows"]]))
    md.append("")
    rows = {r["tool"]: r for r in res["rows"]}
    small = {r["tool"]: r for r in ((bb or {}).get("results") or {}).get("rows", [])}
    out = []
    for mine, theirs in (("base-backup (primary)", "walvault base-backup"), ("pitr-prepare", "walvault pitr-prepare"),
                         ("base-backup (standby)", "walvault base-backup")):
        if mine in rows and theirs in small:
            a, b = rows[mine]["mb_per_s"], small[theirs]["mb_per_s"]
            out.append(target(a >= 0.9 * b, f"{mine}: {a:.0f} MB/s against {b:.0f} MB/s on the basebackup stage's cluster "
                              "(target: within 10%)", f"{a / b:.2f}x"))
    rss = max((r["maxrss_mib"] for r in res["rows"]), default=0)
    out.append(target(rss < 64, f"max RSS {rss:.0f} MiB (target: under 64 MiB)", f"{rss:.0f} MiB"))
    spool = max((r.get("spool_peak_mib") or 0 for r in res["rows"]), default=0)
    md.append(f"Spool peak {spool:.0f} MiB: bounded by the parts in flight (`--jobs` x compressed `--part-size`).")
    rs = res.get("resume")
    if rs:
        out.append(target(rs["redone_fraction"] <= 0.10,
                          f"resume after a SIGKILL at 50%: {rs['reused_bytes'] / 1e6:,.0f} MB reused of "
                          f"{rs['stored_before_kill'] / 1e6:,.0f} MB stored before the kill; "
                          f"{rs['redone_bytes'] / 1e6:,.0f} MB read again = {100 * rs['redone_fraction']:.1f}% of the backup "
                          "(target: at most 10%)", f"{100 * rs['redone_fraction']:.1f}%"))
    md += [""] + out + [""]
    return md
