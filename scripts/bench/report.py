#!/usr/bin/env python3
"""Write docs/BENCHMARKS.md and docs/benchmarks/drain.svg from the raw JSON the harness
wrote into docs/benchmarks/*.json (stdlib only).

Usage: python3 scripts/bench/report.py [--in docs/benchmarks] [--out docs/BENCHMARKS.md]
"""
import argparse
import json
import re
import os
import sys
from xml.sax.saxutils import escape

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
MIB = 1024 * 1024


def load(d, stage):
    p = os.path.join(d, f"{stage}.json")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def f(x, fmt="{:.1f}"):
    return "-" if x is None else fmt.format(x)


def cell(c):
    return str(c).replace("|", "\\|").replace("\n", " ")


def table(headers, rows):
    out = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def target(ok, text, miss):
    return f"- **{'met' if ok else 'MISSED'}**: {text}" + ("" if ok else f" (missed by {miss})")


def compare(ok, text, miss):
    text = text.replace(" >= ", " vs ").replace(" <= ", " vs ")
    return f"- {'ahead' if ok else 'behind'}: {text}" + ("" if ok else f" (behind by {miss})")


def machine_line(doc):
    m = doc["machine"]
    la = ", ".join(f"{x:.2f}" for x in m["loadavg"])
    lb = ", ".join(f"{x:.2f}" for x in doc.get("loadavg_after", []))
    rec = m.get("page_cache_reclaim")
    rec = (f"; the host reclaims pages idle for {rec['min_idle_s']:.0f} s (page cache included), up to "
           f"{rec['max_bytes_per_s'] / 2**20:.0f} MiB/s (DAMON pageout)" if rec else "")
    return (f"_{m['date']}, {m['nproc']} cores ({m.get('cpu')}), load average before {la}, after {lb}; "
            f"stage took {doc['seconds']:.0f} s{rec}._")


def svg_drain(drain, s3, path):
    """Grouped horizontal bars: seg/s per tool, one group per corpus (local directory), then S3."""
    groups = []
    for kind, c in (drain or {}).get("corpora", {}).items():
        groups.append((f"{kind} WAL, local directory", [(r["tool"], r["seg_per_s"]) for r in c["rows"]], c.get("limit_seg_per_s")))
    for kind, c in (s3 or {}).get("corpora", {}).items():
        groups.append((f"{kind} WAL, S3 (moto)", [(r["tool"], r["seg_per_s"]) for r in c["rows"]], None))
    if not groups:
        return False
    vmax = max(v for _, rows, lim in groups for _, v in rows + ([("", lim)] if lim else []))
    bar_h, gap, left, width = 18, 34, 250, 430
    height = 40 + sum(len(rows) * (bar_h + 4) + gap for _, rows, _ in groups) + 20
    colors = {"cp": "#9e9e9e", "curl": "#9e9e9e", "zstd": "#bdbdbd", "wal-push": "#1f77b4", "pgBackRest": "#ff7f0e"}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 80}" height="{height}" font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="20" font-size="14" font-weight="bold">Backlog drain: segments per second (higher is better)</text>']
    y = 40
    for title, rows, lim in groups:
        out.append(f'<text x="10" y="{y + 12}" font-weight="bold">{escape(title)}</text>')
        y += 18
        top = y
        for tool, v in rows:
            color = next((c for k, c in colors.items() if tool.startswith(k)), "#666")
            w = max(1, int(width * v / vmax))
            out.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{escape(tool)}</text>')
            out.append(f'<rect x="{left}" y="{y}" width="{w}" height="{bar_h}" fill="{color}"/>')
            out.append(f'<text x="{left + w + 4}" y="{y + 13}">{v:.1f}</text>')
            y += bar_h + 4
        if lim:
            x = left + int(width * lim / vmax)
            out.append(f'<line x1="{x}" y1="{top - 4}" x2="{x}" y2="{y}" stroke="red" stroke-dasharray="4,3"/>')
            out.append(f'<text x="{x + 3}" y="{top - 6}" fill="red" font-size="10">limit {lim:.1f}</text>')
        y += gap - 18
    out.append("</svg>")
    with open(path, "w") as fh:
        fh.write("\n".join(out) + "\n")
    return True


# base-backup's phases (its `phases (ms)` log line), grouped into the columns of the table.
PHASE_COLUMNS = [("setup", ["connect", "identity", "name"]), ("reference", ["reference"]),
                 ("checkpoint", ["backup-start"]), ("summaries", ["walk", "summaries"]), ("copy", ["copy"]),
                 ("stop", ["backup-stop", "label"]), ("archive wait", ["archive-wait"]),
                 ("finish", ["manifest-build", "block-map", "manifest", "metadata", "latest", "summary"])]


def phase_table(rows):
    """Where walvault's wall time went, from base-backup's own phase log; `process` is the
    rest of the measured wall time (start-up, exit)."""
    wv = [r for r in rows if r.get("phases_ms")]
    if not wv:
        return []
    out = []
    for r in wv:
        p = r["phases_ms"]
        cells = [f(sum(p.get(n, 0) for n in names) / 1e3, "{:.2f}") for _, names in PHASE_COLUMNS]
        process = r["wall_s"] - p.get("total", 0) / 1e3
        catchup = r.get("summarizer_catchup_s")
        out.append([r["workload"]] + cells + [f(process, "{:.2f}"), f(r["wall_s"], "{:.2f}"),
                                              f(catchup, "{:.2f}") if catchup is not None else ""])
    head = ["workload"] + [c for c, _ in PHASE_COLUMNS] + ["process", "wall", "summarizer catch-up before"]
    return ["Where walvault's wall time goes (seconds; base-backup's own phase log: `summaries` includes waiting for the "
            "WAL summarizer to reach the backup's start; `stop` is pg_backup_stop and the backup_label part; the last "
            "column is how long the summarizer took to catch up after the workload's checkpoint, before either tool ran):",
            "", table(head, out), ""]


def incremental_section(doc):
    """Issue 13: incremental backups against the full backup and pg_basebackup --incremental."""
    if not doc or not doc.get("results"):
        return []
    res = doc["results"]
    md = ["## Incremental backups (PostgreSQL 17, summarize_wal = on)", "", machine_line(doc), ""]
    if doc.get("quick"):
        md += ["> **Quick run (`--quick`)** of this stage: a small cluster (pgbench scale 10) on a shared, busy 2-core "
               "machine, where a backup's fixed costs (checkpoint, waiting for the WAL to be archived and summarized) "
               "dominate its wall time. The issue's targets are for a cluster of 4 GB or more: rerun "
               "`scripts/bench.sh --stages incremental` on a quiet machine.", ""]
    md.append(f"pgbench scale {res['scale']}: {res['cluster_bytes'] / 1e6:.0f} MB, {res['relation_pages']} relation pages. "
              "`read` is what base-backup read from PGDATA, `changed` the changed blocks it stored (uncompressed), "
              f"`stored` the bytes in the repository. Every backup starts on a checkpointed cluster (a `CHECKPOINT` "
              "after each workload, as before the full backup: whichever tool ran first would otherwise pay for "
              "flushing the workload's pages) whose WAL is summarized up to that checkpoint (the summarizer reads "
              "WAL lazily; whichever tool ran first would otherwise wait for it to read the workload's WAL). "
              f"pgBackRest: {res.get('pgbackrest')}.")
    md.append("")
    rows = res["rows"]
    md.append(table(["workload", "tool", "wall s", "CPU s", "read MB", "changed MB", "changed pages", "stored MB", "source"],
                    [[r["workload"], r["tool"], f(r["wall_s"]), f(r["cpu_s"]), f(r.get("read_bytes", 0) / 1e6) if "read_bytes" in r else "",
                      f(r["changed_bytes"] / 1e6) if "changed_bytes" in r else "",
                      f(100 * r["changed_page_fraction"], "{:.1f}%") if "changed_page_fraction" in r else "",
                      f(r["stored_bytes"] / 1e6, "{:.2f}"), r.get("block_source") or ""] for r in rows]))
    md.append("")
    md += phase_table(rows)
    md.append(table(["restore", "wall s", "CPU s", "MB", "MB/s"],
                    [[r["restore"], f(r["wall_s"]), f(r["cpu_s"]), f(r["bytes"] / 1e6, "{:.0f}"), f(r["mb_per_s"], "{:.0f}")]
                     for r in res["restores"]]))
    md.append("")
    wv = [r for r in rows if r["tool"].startswith("walvault")]
    full, one = wv[0], next((r for r in wv if r["workload"] == "about 1% of pages"), None)
    if one:
        ratio = full["stored_bytes"] / max(1, full["changed_bytes"])
        expect = one["changed_bytes"] * ratio
        md.append(target(one["wall_s"] <= 0.1 * full["wall_s"],
                         f"at ~1% changed the incremental takes {one['wall_s']:.1f} s, {100 * one['wall_s'] / full['wall_s']:.0f}% "
                         "of the full backup's wall time (target: at most 10%)", "the figure above"))
        pgb = next((r for r in rows if r["workload"] == "about 1% of pages" and r["tool"].startswith("pg_basebackup")), {})
        if pgb.get("zstd_bytes"):
            z = pgb["zstd_bytes"]
            md.append(target(one["stored_bytes"] <= 1.5 * z,
                             f"it stores {one['stored_bytes'] / 1e6:.2f} MB, {one['stored_bytes'] / z:.2f}x the changed blocks "
                             f"compressed ({z / 1e6:.2f} MB: `pg_basebackup --incremental`'s output for the same change, "
                             "`tar | zstd -1`) (target: at most 1.5x)", "the figure above"))
        md.append(f"- (for comparison: {one['stored_bytes'] / max(1, expect):.2f}x its changed blocks at the full backup's "
                  "compression ratio; changed pages -- index pages, half-updated heap pages -- compress about half as well "
                  "as the average page of a fresh pgbench table)")
    if len(res["restores"]) == 2:
        a, b = res["restores"]
        md.append(target(b["mb_per_s"] >= 0.9 * a["mb_per_s"],
                         f"restoring full + 6 incrementals runs at {b['mb_per_s']:.0f} MB/s, {b['mb_per_s'] / a['mb_per_s']:.2f}x "
                         "the full restore's (target: at least 0.9x)", "the figure above"))
    md.append("")
    leg = res.get("pgbackrest_pg15") or {}
    if leg.get("rows"):
        md.append(f"Against pgBackRest (PostgreSQL {leg['pg']}, which pgBackRest 2.45 supports; walvault compares blocks by "
                  f"content there, having no WAL summaries), pgbench scale {leg['scale']}:")
        md.append("")
        md.append(table(["workload", "tool", "wall s", "CPU s", "stored MB"],
                        [[r["workload"], r["tool"], f(r["wall_s"]), f(r["cpu_s"]), f(r["stored_bytes"] / 1e6, "{:.2f}")]
                         for r in leg["rows"]]))
        md.append("")
        by = {(r["workload"], r["tool"].split()[0]): r for r in leg["rows"]}
        w1, p1 = by.get(("about 1% of pages", "walvault")), by.get(("about 1% of pages", "pgBackRest"))
        if w1 and p1:
            x = p1["stored_bytes"] / max(1, w1["stored_bytes"])
            md.append(target(x >= 3, f"at ~1% changed walvault stores {x:.1f}x less than pgBackRest incr (target: at least 3x)",
                             "the figure above"))
            md.append("")
    elif leg.get("skipped"):
        md += [f"pgBackRest on PostgreSQL 15: skipped ({leg['skipped']}).", ""]
    return md


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--in", dest="src", default=os.path.join(REPO_ROOT, "docs", "benchmarks"))
    ap.add_argument("--out", default=os.path.join(REPO_ROOT, "docs", "BENCHMARKS.md"))
    a = ap.parse_args()
    d = a.src
    docs = {s: load(d, s) for s in ("corpora", "archive-single", "drain", "live", "restore", "basebackup", "s3", "codec",
                                      "incremental", "rto")}
    scale = load(d, "scale")  # its own section, marked quick on its own
    present = [x for x in docs.values() if x]
    if not present:
        sys.exit(f"no benchmark JSON in {d}")
    # The incremental stage says in its own section whether it was a quick run.
    quick = any(x.get("quick") for s, x in docs.items() if x and s != "incremental")
    md = ["# Benchmarks", ""]
    md.append("Generated by `scripts/bench.sh` (harness `scripts/bench/harness.py`, report `scripts/bench/report.py`) "
              "from the raw JSON in [`docs/benchmarks/`](benchmarks/). Every number is measured in one run beside its "
              "baselines on the same machine; compare ratios, not absolute values, across machines.")
    md.append("")
    if quick:
        md.append("> **Quick run (`--quick`)**: few segments, small clusters, on a shared and busy 2-core machine. "
                  "The numbers are noisy smoke-test numbers, not results; rerun `scripts/bench.sh` on a quiet machine.")
        md.append("")
    m = present[0]["machine"]
    md.append(f"Machine: {m['nproc']} cores, {m.get('cpu')}, {m.get('mem_gib')} GiB, kernel {m.get('kernel')}. "
              "Versions: " + ", ".join(f"{k} `{v}`" for k, v in m["versions"].items() if v) + ".")
    md.append("")
    failed = [s for s, x in docs.items() if x and x.get("error")]
    missing = [s for s, x in docs.items() if not x]
    if failed:
        md.append("Failed stages:")
        md.append("")
        md += [f"- `{s}`: " + docs[s]["error"].replace("\n", " ").replace("`", "'") for s in failed]
        md.append("")
    if missing:
        md.append("Stages not run: " + ", ".join(f"`{s}`" for s in missing) + ".")
        md.append("")
    targets = []  # the targets of issue #7
    versus = []  # walvault against its baselines (no stated target)

    # ---- corpora
    c = docs["corpora"]
    if c and c.get("results"):
        md += ["## Corpora", "", machine_line(c), ""]
        md.append(table(["corpus", "segments", "generated in s"],
                        [[k, v["segments"], f(v["generate_s"], "{:.0f}")] for k, v in c["results"].items()]))
        md += ["", "pgbench: `pgbench -i -s 10` then `pgbench -T 5 -c 4 -j 2` rounds. OLTP: random text, jsonb with a GIN index, "
               "two b-tree indexes, updates and deletes. Both from scratch PostgreSQL 15 clusters (checkpoints every 30 s, so "
               "full-page images are in the WAL; asynchronous commit), real 16 MiB segments.", ""]

    # ---- drain
    dr = docs["drain"]
    s3 = docs["s3"]
    s3r = s3.get("results") if s3 else None
    svg = svg_drain(dr.get("results") if dr else None, s3r, os.path.join(d, "drain.svg"))
    if dr and dr.get("results"):
        md += ["## Archiving backlog drain", "", machine_line(dr), ""]
        md.append("Hundreds of `.ready` files (fewer with `--quick`) archived one call per file in name order, "
                  "the way PostgreSQL's archiver calls `archive_command` (cwd = PGDATA, `%p` = `pg_wal/NAME`), "
                  "into a local directory. CPU is every process's user+sys, detached helpers (pgBackRest's async "
                  "process) included. wal-push and pgBackRest compress and encrypt (zstd 1 + AES-256-GCM; "
                  "zst 1 + aes-256-cbc: pgBackRest runs with `compress-level=1`, the level wal-push uses, not its "
                  "default 3); `zstd -1` does not encrypt.")
        md.append("")
        if svg:
            md += ["![backlog drain, seg/s](benchmarks/drain.svg)", ""]
        for kind, cr in dr["results"]["corpora"].items():
            floor = cr["storage_floor_seg_per_s"]
            rows = []
            pgbr_sync = next((r for r in cr["rows"] if r["tool"] == "pgBackRest sync"), None)
            pgbr_async = next((r for r in cr["rows"] if r["tool"].startswith("pgBackRest async")), None)
            for r in cr["rows"]:
                rows.append([r["tool"], f(r["seg_per_s"]), f(r["cpu_s_per_seg"], "{:.3f}"), f(r["ratio"], "{:.2f}"),
                             f(r["seg_per_s"] / floor, "{:.2f}"),
                             f(r["seg_per_s"] / pgbr_async["seg_per_s"], "{:.2f}") if pgbr_async else "-"])
            md += [f"### {kind} WAL ({cr['rows'][0]['segments']} segments)", ""]
            md.append(table(["tool", "seg/s", "CPU s/seg", "compression ratio", "vs cp", "vs pgBackRest async"], rows))
            md.append("")
            md.append(f"Limit = min({cr['cores']} cores / codec CPU per segment ({cr['codec_cpu_s_per_seg']:.3f} s, `zstd -1`), "
                      f"storage floor ({floor:.1f} seg/s, `cp` + fsync)) = **{cr['limit_seg_per_s']:.1f} seg/s**; "
                      f"walvault's best ({cr['walvault_best_seg_per_s']:.1f} seg/s) is **{cr['walvault_pct_of_limit']:.0f}%** of it.")
            md.append("")
            pct = cr["walvault_pct_of_limit"]
            targets.append(target(pct >= 90, f"drain, {kind} WAL: walvault's best at {pct:.0f}% of the limit "
                                  f"({cr['walvault_best_seg_per_s']:.1f} of {cr['limit_seg_per_s']:.1f} seg/s; target >= 90%)",
                                  f"{90 - pct:.0f} points"))
            if pgbr_async:
                best = cr["walvault_best_seg_per_s"]
                best_row = max((r for r in cr["rows"] if r["tool"].startswith("wal-push")), key=lambda r: r["seg_per_s"])
                ok = best >= pgbr_async["seg_per_s"] and best_row["ratio"] >= 0.995 * pgbr_async["ratio"]
                targets.append(target(ok, f"drain, {kind} WAL: {best_row['tool']} {best:.1f} seg/s (ratio {best_row['ratio']:.2f}) "
                                      f">= pgBackRest async {pgbr_async['seg_per_s']:.1f} seg/s (ratio {pgbr_async['ratio']:.2f})",
                                      f"{100 * (1 - best / pgbr_async['seg_per_s']):.0f}%"))
            if pgbr_sync:
                wp = min(r["cpu_s_per_seg"] for r in cr["rows"] if r["tool"].startswith("wal-push"))
                versus.append(compare(wp <= pgbr_sync["cpu_s_per_seg"],
                                      f"drain, {kind} WAL: wal-push CPU {wp:.3f} s/seg <= pgBackRest sync {pgbr_sync['cpu_s_per_seg']:.3f} s/seg",
                                      f"{100 * (wp / pgbr_sync['cpu_s_per_seg'] - 1):.0f}%"))

    # ---- single call
    a1 = docs["archive-single"]
    if a1 and a1.get("results"):
        res = a1["results"]
        md += ["## One cold call per segment", "", machine_line(a1), ""]
        md.append(f"Each call a new process on a new pgbench segment (median of {res['rows'][0]['runs']} runs); "
                  "max RSS is the largest of any run.")
        md.append("")
        md.append(table(["tool", "wall ms", "CPU ms", "max RSS MiB", "stored bytes"],
                        [[r["tool"], f(r["wall_ms"]), f(r["cpu_ms"]), f(r["maxrss_mib"]),
                          f(r["stored_bytes"], "{:,.0f}")] for r in res["rows"]]))
        md.append("")
        by = {r["tool"]: r for r in res["rows"]}
        wp, pb = by.get("wal-push"), by.get("pgBackRest archive-push (sync)")
        if wp and pb:
            ratio = wp["cpu_ms"] / pb["cpu_ms"]
            targets.append(target(ratio <= 0.9, f"single cold wal-push CPU {wp['cpu_ms']:.0f} ms = {ratio:.2f}x pgBackRest sync "
                                  f"archive-push ({pb['cpu_ms']:.0f} ms), target <= 0.9x", f"{ratio - 0.9:.2f}x"))
        if wp:
            targets.append(target(wp["maxrss_mib"] < 64, f"single cold wal-push max RSS {wp['maxrss_mib']:.1f} MiB < 64 MiB",
                                  f"{wp['maxrss_mib'] - 64:.1f} MiB"))
        if res.get("wal_push_requests"):
            md += [f"wal-push `--json` requests for one call: `{json.dumps(res['wal_push_requests'])}`", ""]

    # ---- live
    lv = docs["live"]
    if lv and lv.get("results"):
        res = lv["results"]
        md += ["## Live cluster under the fastest WAL generators", "", machine_line(lv), ""]
        md.append(f"`pgbench -i -s {res['scale']}`, then bulk `INSERT ... SELECT` and `COPY` of {res['rows']:,} rows, then "
                  "`CREATE INDEX`, with `archive_command` calling the tool; `pg_wal/archive_status/*.ready` counted every 100 ms.")
        md.append("")
        md.append(table(["archive_command", "WAL MB/s generated", "segments", "max .ready", "mean .ready", "drained after end (s)"],
                        [[r["tool"], f(r["wal_mb_per_s"]), f(r["segments"], "{:.0f}"), r["max_ready"], f(r["mean_ready"], "{:.2f}"),
                          f(r["drain_after_end_s"])] for r in res["results"]]))
        md.append("")
        md.append("Phases (s): " + "; ".join(r["tool"] + ": " + ", ".join(f"{p['phase']} {p['s']:.0f}" for p in r["phases"])
                                          for r in res["results"]))
        md.append("")
        lb = {r["tool"]: r for r in res["results"]}
        if "wal-push" in lb and "pgBackRest async (process-max 2)" in lb and lb["wal-push"]["max_ready"] is not None:
            a_, b_ = lb["wal-push"]["max_ready"], lb["pgBackRest async (process-max 2)"]["max_ready"]
            versus.append(compare(a_ <= b_, f"live cluster: max .ready with wal-push {a_} vs pgBackRest async {b_}", f"{a_ - b_} files"))
        for r in res["results"]:
            if r["tool"] == "wal-push" and r["max_ready"] is not None:
                targets.append(target(r["max_ready"] <= 4, f"live cluster: max .ready with wal-push = {r['max_ready']} (target <= 4)",
                                      f"{r['max_ready'] - 4} files"))

    # ---- restore
    rs = docs["restore"]
    if rs and rs.get("results"):
        res = rs["results"]
        md += ["## Restore", "", machine_line(rs), ""]
        md.append(f"One `wal-fetch` call per segment (median); prefetched: the file was already in the prefetch spool "
                  f"({res['prefetch_hits']} of {res['prefetch_calls']} calls were).")
        md.append("")
        md.append(table(["restore_command", "wall ms", "CPU ms", "max RSS MiB"],
                        [[r["tool"], f(r["wall_ms"]), f(r["cpu_ms"]), f(r["maxrss_mib"])] for r in res["fetch"]]))
        md.append("")
        p = res.get("pitr")
        md.append(f"### PITR replay (`{res.get('pitr_script')}`)")
        md.append("")
        if p:
            floor = next((x for x in p["methods"] if x["name"].startswith("replay floor")), None)
            cp = next((x for x in p["methods"] if x["name"].startswith("cp")), None)
            md.append(f"A base backup recovered through {p['segments']} archived pgbench segments, timed from `pg_ctl start` "
                      "to promoted.")
            md.append("")
            md.append(table(["WAL source", "seconds", "s per segment", "vs floor", "vs cp"],
                            [[x["name"], f(x["seconds"], "{:.2f}"), f(x["s_per_seg"], "{:.3f}"),
                              f(x["seconds"] / floor["seconds"], "{:.2f}") if floor else "-",
                              f(x["seconds"] / cp["seconds"], "{:.2f}") if cp else "-"] for x in p["methods"]]))
            if p.get("fetch_latency"):
                md += ["", p["fetch_latency"]]
                m = re.search(r"median ([0-9.]+) ms, max ([0-9.]+) ms", p["fetch_latency"])
                if m:
                    med, mx = float(m.group(1)), float(m.group(2))
                    targets.append(target(mx < 10, f"a prefetched file served: wal-fetch answers for a segment already in pg_wal "
                                          f"in {med:.1f} ms median, {mx:.1f} ms max (target well under 10 ms)", f"{mx - 10:.1f} ms"))
            wf = next((x for x in p["methods"] if x["name"].startswith("wal-fetch")), None)
            if wf and floor:
                ratio = wf["seconds"] / floor["seconds"]
                targets.append(target(ratio <= 1.2, f"PITR: walvault {wf['seconds']:.2f} s = {ratio:.2f}x the replay floor "
                                      f"({floor['seconds']:.2f} s; target <= 1.2x)", f"{ratio - 1.2:.2f}x"))
            if wf and cp:
                versus.append(compare(wf["seconds"] <= cp["seconds"], f"PITR: wal-fetch {wf['seconds']:.2f} s <= cp as restore_command "
                                      f"{cp['seconds']:.2f} s", f"{100 * (wf['seconds'] / cp['seconds'] - 1):.0f}%"))
        elif res.get("pitr_text"):
            md += ["The PITR script wrote no JSON; its output:", "", "```", res["pitr_text"].strip(), "```"]
        else:
            md += ["PITR stage failed:", "", "```", str(res.get("pitr_error")).strip(), "```"]
        md.append("")

    # ---- base backup
    bb = docs["basebackup"]
    if bb and bb.get("results"):
        res = bb["results"]
        md += ["## Base backup and restore", "", machine_line(bb), ""]
        if res.get("backed_up_bytes"):
            basis = (f"MB/s of the bytes backed up ({res['backed_up_bytes'] / 1e6:,.0f} MB: base-backup's `bytes`, the data "
                     f"files without pg_wal) and, for restores, of the bytes restored "
                     f"({(res.get('restored_bytes') or res['backed_up_bytes']) / 1e6:,.0f} MB: pitr-prepare's `bytes`), "
                     "the same divisor for every tool")
        else:
            basis = "MB/s of the databases' size (`pg_database_size`; a run before the divisor was the bytes backed up)"
        md.append(f"A pgbench cluster of {res['cluster_bytes'] / 1e6:,.0f} MB (`-s {res['scale']}`); {basis}. "
                  f"walvault stored {res['walvault_stored_bytes'] / 1e6:,.0f} MB.")
        md.append("")
        md.append(table(["tool", "op", "seconds", "MB/s", "CPU s", "CPU s per GB", "max RSS MiB"],
                        [[r["tool"], r["op"], f(r["wall_s"]), f(r["mb_per_s"], "{:.0f}"), f(r["cpu_s"]), f(r["cpu_s_per_gb"]),
                          f(r["maxrss_mib"], "{:.0f}")] for r in res["rows"]]))
        md.append("")
        by = {r["tool"]: r for r in res["rows"]}
        for mine, theirs, op in (("walvault base-backup", "pgBackRest backup (process-max 2)", "backup"),
                                 ("walvault pitr-prepare", "pgBackRest restore (process-max 2)", "restore")):
            if mine in by and theirs in by:
                a_, b_ = by[mine]["mb_per_s"], by[theirs]["mb_per_s"]
                rss = by[mine]["maxrss_mib"]
                targets.append(target(a_ >= 1.5 * b_, f"{op}: walvault {a_:.0f} MB/s = {a_ / b_:.2f}x pgBackRest {b_:.0f} MB/s "
                                      f"(process-max 2; target >= 1.5x), max RSS {rss:.0f} MiB", f"{1.5 - a_ / b_:.2f}x"))

    # ---- S3
    if s3r and not s3r.get("error"):
        md += ["## S3 (moto on loopback)", "", machine_line(s3), ""]
        md.append("The same drain against the S3 test server (`scripts/s3-test-server.sh`); requests per segment counted by "
                  "the server (its request log) and by wal-push (`--json` `requests`). `curl PUT` is an unsigned plain "
                  "upload of the raw segment: the storage floor. pgBackRest's S3 driver speaks only https: it goes through "
                  "`scripts/bench/tls_proxy.py` (self-signed TLS in front of the same server), which adds latency to its rows.")
        md.append("")
        for kind, cr in s3r["corpora"].items():
            md += [f"### {kind} WAL ({cr['rows'][0]['segments']} segments)", ""]
            md.append(table(["tool", "seg/s", "CPU s/seg", "server requests/seg", "wal-push requests/seg"],
                            [[r["tool"], f(r["seg_per_s"]), f(r["cpu_s_per_seg"], "{:.3f}"), f(r["server_requests_per_seg"], "{:.2f}"),
                              ", ".join(f"{k} {v:.2f}" for k, v in (r["client_requests_per_seg"] or {}).items()) or "-"]
                             for r in cr["rows"]]))
            md.append("")
        if s3r.get("single"):
            md.append(table(["single cold call", "wall ms", "CPU ms", "max RSS MiB"],
                            [[r["tool"], f(r["wall_ms"]), f(r["cpu_ms"]), f(r["maxrss_mib"])] for r in s3r["single"]]))
            md.append("")
        sb = {r["tool"]: r for r in s3r.get("single") or []}
        if "wal-push (S3)" in sb and "pgBackRest archive-push (sync, TLS)" in sb:
            a_, b_ = sb["wal-push (S3)"]["cpu_ms"], sb["pgBackRest archive-push (sync, TLS)"]["cpu_ms"]
            versus.append(compare(a_ <= 0.9 * b_, f"single cold call on S3: wal-push CPU {a_:.0f} ms = {a_ / b_:.2f}x pgBackRest "
                                  f"sync archive-push over TLS ({b_:.0f} ms; its TLS costs it CPU); the local target is 0.9x",
                                  f"{a_ / b_ - 0.9:.2f}x"))
        if s3r.get("single_requests"):
            md += [f"wal-push `--json` requests for one S3 call: `{json.dumps(s3r['single_requests'])}`", ""]
    elif s3r:
        md += ["## S3", "", f"Not run: {s3r['error']}", ""]

    summary = []
    if targets:
        summary += ["## Targets (issue #7)", ""] + targets + [""]
    if versus:
        summary += ["## Against the baselines", "", "No target is stated for these; they say where walvault stands.", ""] + versus + [""]
    at = md.index("## Corpora") if "## Corpora" in md else len(md)
    md = md[:at] + summary + md[at:]
    md += incremental_section(docs.get("incremental"))
    import report_scale  # noqa: PLC0415
    md += report_scale.section(scale, docs["basebackup"], f, table, target, machine_line)
    md += ["## Codec (Criterion)", ""]
    cd = docs.get("codec")
    if cd and cd.get("results"):
        md += [machine_line(cd), ""]
        md.append(f"`{cd['results']['command']}` on one real segment of each corpus (`WALVAULT_BENCH_SEGMENT`), in process: "
                  "encode includes the content digest, decode verifies it. MiB/s of plaintext, one core.")
        md.append("")
        kinds = list(cd["results"]["corpora"])
        rows = {}
        for kind in kinds:
            for r in cd["results"]["corpora"][kind]["rows"]:
                rows.setdefault((r["codec"], r["op"]), {})[kind] = r
        md.append(table(["codec", "op"] + [f"{k} MiB/s" for k in kinds] + [f"{k} ratio" for k in kinds],
                        [[c, op] + [f(v.get(k, {}).get("mib_per_s"), "{:.0f}") for k in kinds]
                         + [f(v.get(k, {}).get("ratio"), "{:.2f}") for k in kinds] for (c, op), v in rows.items()]))
        md.append("")
    md += ["`cargo bench -p walvault --bench codec` (add `-- --quick` for a smoke run; set `WALVAULT_BENCH_SEGMENT` to a real "
           "16 MiB segment, else synthetic WAL-like pages) measures encode and decode throughput of zstd 1, zstd 3 and "
           "gzip 6, with and without AES-256-GCM; Criterion's own report is in `target/criterion/`.", ""]
    import rto  # scripts/bench/rto.py renders its own section
    md += rto.render(docs.get("rto"), f, table, target, machine_line)
    with open(a.out, "w") as fh:
        fh.write("\n".join(md))
    print(f"wrote {a.out}" + (" and " + os.path.join(d, "drain.svg") if svg else ""))


if __name__ == "__main__":
    main()
