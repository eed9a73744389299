"""The benchmark: build the warehouse from generated data at several scales with the real
scripts, each on a fresh embedded database, and (with --compare duckdb) the same star schema
built by DuckDB from the same files in the same run.

    python bench/run.py [--scales 10000,100000,1000000] [--compare duckdb] [--incremental]

Prints a table and writes bench/out/results.json. Counts are checked against what the
generator says a correct load gives; a wrong count fails the run.
"""
import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from sql_queries import STAGING_TABLES, STAR_TABLES  # noqa: E402

TABLES = STAGING_TABLES + STAR_TABLES


def pss_mb(pids):
    """The proportional set size of these processes together (shared pages counted once), MB."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass  # gone, or not ours to read
    return total / 1024


def server_pids(pgdata):
    """The embedded server's processes: the postmaster (postmaster.pid) and its children."""
    try:
        postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    return [postmaster] + children_of(postmaster)


def children_of(pid):
    """The kernel's list of a process's children; where it keeps none, a scan of every
    /proc/*/stat (2.5 ms a time here, against 0.03)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except OSError:
        return scan_children(pid)


def scan_children(pid):
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            pass
    return children


# Reading PSS walks each process's memory: during a 1M load a sample took about 15 ms of CPU.
# Every 50 ms that was 3.3 CPU-seconds, a tenth of this 2-core machine, taken from the load
# it measures (DuckDB's peak comes free from the kernel); every 0.25 s, 0.9. The load's memory
# peaks hold for seconds (sorts and hashes): in a 50 ms trace of a 1M load, sampling every
# 0.43 s found the same peak from any starting offset.
SAMPLE_EVERY = 0.25


def run_measured(cmd, pgdata=None):
    """Wall seconds, peak RSS (MB) and stdout of one process; with pgdata also the peak PSS
    (MB) of it and the embedded server's processes together, sampled every SAMPLE_EVERY
    seconds (Linux)."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    peak, done = [0.0], threading.Event()

    def sample():
        while not done.wait(SAMPLE_EVERY):
            peak[0] = max(peak[0], pss_mb([proc.pid] + server_pids(pgdata)))
    sampler = threading.Thread(target=sample, daemon=True)
    if pgdata is not None and Path("/proc/self/smaps_rollup").exists():
        sampler.start()
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    done.set()
    if status:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{err.decode()}")
    result = (wall, usage.ru_maxrss / 1024, out.decode())
    return result + (peak[0] or None,) if pgdata is not None else result


def dataset(out, events, seed):
    songs = max(20, events // 50)
    folder = out / f"data-{events}"
    manifest = folder / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        if (m["events"], m["songs"], m["seed"]) == (events, songs, seed):
            return folder, m
    # In a child process: a process forked from a big parent starts with the parent's peak RSS,
    # and every ETL process measured below is forked from this one.
    wall, _, _ = run_measured([sys.executable, str(HERE / "generate.py"), "--events", str(events),
                               "--songs", str(songs), "--seed", str(seed), "--out", str(folder)])
    print(f"  generated {events:,} events, {songs:,} song files in {wall:.1f} s", flush=True)
    return folder, json.loads(manifest.read_text())


def ours(out, folder, events, workers):
    pgdata = out / f"pg-{events}"
    shutil.rmtree(pgdata, ignore_errors=True)
    cfg = out / f"bench-{events}.cfg"
    cfg.write_text(f"[LOCAL]\nDATA_DIR = {pgdata}\n[S3]\nSONG_DATA = {folder / 'song_data'}\n"
                   f"LOG_DATA = {folder / 'log_data'}\n[ETL]\nWORKERS = {workers}\n")
    py = sys.executable
    run_measured([py, "create_tables.py", "--config", str(cfg)])  # also starts the server: not timed
    wall, rss, stdout, pss = run_measured([py, "etl.py", "--config", str(cfg), "--json"], pgdata)
    result = json.loads(stdout)
    _, _, matched = run_measured([py, "analytics.py", "--config", str(cfg), "--csv",
                                  "--sql", "SELECT COUNT(song_id) FROM songplays"])
    counts = {t: result["after"][t] for t in TABLES}
    counts["matched"] = int(matched.splitlines()[1])
    steps = result["steps"]
    shutil.rmtree(pgdata, ignore_errors=True)
    return {"wall": wall, "rss_mb": rss, "pss_mb": pss, "counts": counts,
            "phases": {k: steps.get(k) for k in ("staging songs", "staging events", "star tables", "checks")}}


def incremental(out, folder, events, workers):
    """A day's load costs the day, not the warehouse: the last log day loaded into an empty
    warehouse, then into one holding every other day (loaded first, not timed); returns
    {"events": the day's events, "empty": seconds, "loaded": seconds}."""
    days = sorted(re.search(r"\d{4}-\d{2}-\d{2}", p.name).group() for p in (folder / "log_data").rglob("*.json"))
    pgdata, cfg, py = out / f"pg-{events}-day", out / f"bench-{events}-day.cfg", sys.executable
    shutil.rmtree(pgdata, ignore_errors=True)
    cfg.write_text(f"[LOCAL]\nDATA_DIR = {pgdata}\n[S3]\nSONG_DATA = {folder / 'song_data'}\n"
                   f"LOG_DATA = {folder / 'log_data'}\n[ETL]\nWORKERS = {workers}\n")
    day = ["etl.py", "--config", str(cfg), "--json", "--date", days[-1]]
    run_measured([py, "create_tables.py", "--config", str(cfg)])
    empty, _, stdout = run_measured([py, *day])
    run_measured([py, "create_tables.py", "--config", str(cfg), "--yes"])
    run_measured([py, "etl.py", "--config", str(cfg), "--from", days[0], "--to", days[-2]])
    loaded, _, _ = run_measured([py, *day])
    shutil.rmtree(pgdata, ignore_errors=True)
    return {"events": json.loads(stdout)["after"]["staging_events"], "empty": empty, "loaded": loaded}


def duck(out, folder, events):
    db_file = out / f"duck-{events}.db"
    db_file.unlink(missing_ok=True)
    wall, rss, stdout = run_measured([sys.executable, str(HERE / "duckdb_load.py"), str(folder / "song_data"),
                                      str(folder / "log_data"), str(db_file)])
    db_file.unlink(missing_ok=True)
    result = json.loads(stdout)
    return {"wall": wall, "rss_mb": rss, "counts": result["counts"], "phases": result["steps"]}


def check(name, got, expected):
    wrong = {k: (got.get(k), v) for k, v in expected.items() if got.get(k) != v}
    if wrong:
        sys.exit(f"{name}: wrong counts (got, expected): {wrong}")


def machine():
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def report(rows, compare):
    head = (f"{'events':>10} {'songs':>7} {'stg songs':>10} {'stg events':>11} {'star':>7} {'checks':>7} "
            f"{'total s':>8} {'events/s':>9} {'etl MB':>7} {'all MB':>7}")
    if compare:
        head += f" {'duckdb s':>9} {'d songs':>8} {'d events':>9} {'d star':>7} {'duck MB':>8} {'ratio':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        o, p = r["ours"], r["ours"]["phases"]
        line = (f"{r['events']:>10,} {r['songs']:>7,} {p['staging songs']:>10.2f} {p['staging events']:>11.2f} "
                f"{p['star tables']:>7.2f} {p['checks']:>7.2f} {o['wall']:>8.2f} {r['events'] / o['wall']:>9,.0f} "
                f"{o['rss_mb']:>7.0f} {o['pss_mb'] or 0:>7.0f}")
        if compare:
            d, q = r["duckdb"], r["duckdb"]["phases"]
            line += (f" {d['wall']:>9.2f} {q['staging songs']:>8.2f} {q['staging events']:>9.2f} "
                     f"{q['star tables']:>7.2f} {d['rss_mb']:>8.0f} {o['wall'] / d['wall']:>6.2f}")
        lines.append(line)
    for r in rows:
        if "day" in r:
            day = r["day"]
            lines.append(f"{r['events']:>10,} events, the last day ({day['events']:,} events): into an empty "
                         f"warehouse {day['empty']:.2f} s, into the other days {day['loaded']:.2f} s "
                         f"({day['loaded'] / day['empty']:.2f}x)")
    return "\n".join(lines)


def medians(rows, compare):
    """Per scale: the median of the runs' total seconds (and of DuckDB's, and of the ratios)."""
    lines = ["", "medians:"]
    for events in dict.fromkeys(r["events"] for r in rows):
        runs = [r for r in rows if r["events"] == events]
        line = (f"{events:>10,} events: ours {statistics.median(r['ours']['wall'] for r in runs):.2f} s, "
                f"all MB {statistics.median(r['ours']['pss_mb'] or 0 for r in runs):.0f}")
        if compare:
            line += (f"; duckdb {statistics.median(r['duckdb']['wall'] for r in runs):.2f} s; ratio "
                     f"{statistics.median(r['ours']['wall'] / r['duckdb']['wall'] for r in runs):.2f}")
        lines.append(line)
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scales", default="10000,100000,1000000", help="event counts, comma-separated")
    p.add_argument("--compare", choices=["duckdb"], help="build the same schema with DuckDB too")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--workers", type=int, default=0, help="[ETL] WORKERS (default: two per core)")
    p.add_argument("--runs", type=int, default=1, help="runs per scale; the table ends with their medians")
    p.add_argument("--incremental", action="store_true",
                   help="also time the last day into an empty warehouse and into one holding the other days")
    p.add_argument("--out", default=str(HERE / "out"))
    args = p.parse_args(argv)
    if args.compare == "duckdb":
        try:
            import duckdb  # noqa: F401  (only: is it installed?)
        except ImportError:
            sys.exit("--compare duckdb needs duckdb: .venv/bin/pip install duckdb (bench only)")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for events in (int(s) for s in args.scales.split(",") for _ in range(args.runs)):
        print(f"scale {events:,} events", flush=True)
        folder, manifest = dataset(out, events, args.seed)
        row = {"events": events, "songs": manifest["songs"], "ours": ours(out, folder, events, args.workers)}
        check("ours", row["ours"]["counts"], manifest["expected"])
        if args.compare:
            row["duckdb"] = duck(out, folder, events)
            check("duckdb", row["duckdb"]["counts"], manifest["expected"])
        if args.incremental:
            row["day"] = incremental(out, folder, events, args.workers)
        rows.append(row)
        print(f"  ours {row['ours']['wall']:.2f} s" + (f", duckdb {row['duckdb']['wall']:.2f} s" if args.compare else ""),
              flush=True)
    table = report(rows, args.compare) + (medians(rows, args.compare) if args.runs > 1 else "")
    print("\n" + table)
    results = {"machine": machine(), "rows": rows, "table": table}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nmachine: {results['machine']}\nwritten: {out / 'results.json'}")


if __name__ == "__main__":
    sys.exit(main())
