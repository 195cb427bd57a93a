"""Turn benchmarks/out/results.json into BENCHMARKS.md and benchmarks/snapshot.png.

python benchmarks/report.py [--results benchmarks/out/results.json] [--md BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent

COMMAND = (
    "python -m venv /tmp/bench && /tmp/bench/bin/pip install . matplotlib && "
    "/tmp/bench/bin/python benchmarks/bench_snapshot.py && "
    "/tmp/bench/bin/python benchmarks/report.py"
)


def mib(n: int) -> str:
    return f"{n / 2**20:.0f}" if n >= 0 else "n/a"


def rows(results: list[dict]) -> list[dict]:
    out = []
    for r in results:
        g = r["gencore"]
        stall = statistics.median(x["probe_stall_ms"] for x in g)
        pause = statistics.median(x["pause_ms"] for x in g)
        worst = max(max(x["probe_stall_ms"], x["pause_ms"]) for x in g)
        publish = statistics.median(x["publish_s"] for x in g)
        blocks = max(x["blocks"] for x in g)
        k, gc = r["kernel"], r["gcore"]
        limit = 1.2 * r["bare_fork_ms"] + 2.0
        out.append(
            {
                "rss": r["rss_mib"],
                "threads": r["threads"],
                "fork": r["bare_fork_ms"],
                "stall": stall,
                "pause": pause,
                "freeze": max(x["freeze_ms"] for x in g),
                "limit": limit,
                "pause_ok": max(stall, pause) <= limit,
                "worst": worst,
                "publish": publish,
                "kernel": k["publish_s"],
                "ratio": publish / k["publish_s"] if k["publish_s"] > 0 else float("nan"),
                "gcore": gc["publish_s"],
                "blocks": blocks,
                "kblocks": k["blocks"],
                "gblocks": gc["blocks"],
                "idle": r["probe_idle_gap_ms"],
            }
        )
    return out


def plot(table: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, n in enumerate(sorted({r["threads"] for r in table})):
        sel = [r for r in table if r["threads"] == n]
        xs = [r["rss"] for r in sel]
        c = f"C{i}"
        a.plot(xs, [r["stall"] for r in sel], "o-", color=c, label=f"gencore, {n} threads")
        a.plot(xs, [r["fork"] for r in sel], "--", color=c, label=f"bare fork(), {n} threads")
        b.plot(xs, [r["publish"] for r in sel], "o-", color=c, label=f"gencore, {n} threads")
    sel = [r for r in table if r["threads"] == min(r["threads"] for r in table)]
    xs = [r["rss"] for r in sel]
    b.plot(xs, [r["kernel"] for r in sel], "k--", label="kernel core (original method)")
    if all(r["gcore"] > 0 for r in sel):
        b.plot(xs, [r["gcore"] for r in sel], "r:", label="gcore (process stopped throughout)")
    a.set(xscale="log", xlabel="RSS (MiB)", ylabel="ms", title="Pause seen by a probe thread")
    b.set(
        xscale="log", yscale="log", xlabel="RSS (MiB)", ylabel="s", title="Time to a finished core"
    )
    for ax in (a, b):
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def bundle_section(data: dict) -> list[str]:
    """The bundling benchmark (benchmarks/bench_bundle.py), medians of its runs."""
    import statistics

    rows_ = data["rows"]

    def med(key: str, field: str) -> float:
        return statistics.median(r[key][field] for r in rows_)

    core = statistics.median(r["core_bytes"] for r in rows_)
    orig = med("original", "s")
    out = [
        "",
        "## Bundling",
        "",
        f"One core of a process with {data['rss_mib']} MiB resident (a quarter random bytes, the "
        f"rest repetitive records), {core / 2**20:.0f} MiB, bundled with its "
        f"{rows_[0]['tar.gz']['files']} files three ways side by side; median of "
        f"{len(rows_)} runs. `app CPU` is the CPU time the application's own interpreter spent "
        "while the bundle was built.",
        "",
        "```",
        "python benchmarks/bench_bundle.py --rss-mib 1024 --repeat 3",
        "```",
        "",
        "| method | time s | vs tar -czf | size MiB | size / core | app CPU ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, label in (
        ("tar.gz", "gencore tar.gz (gzip -1, helper)"),
        ("tar.zst", "gencore tar.zst (zstd -3, all cores, helper)"),
        ("original", "`tar -czf` through /bin/sh (the original)"),
    ):
        out.append(
            f"| {label} | {med(key, 's'):.2f} | {med(key, 's') / orig:.2f} | "
            f"{med(key, 'bytes') / 2**20:.0f} | {med(key, 'bytes') / core:.2f} | "
            f"{med(key, 'app_cpu_s') * 1000:.0f} |"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default=str(HERE / "out" / "results.json"))
    ap.add_argument("--md", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--png", default=str(HERE / "snapshot.png"))
    args = ap.parse_args()
    data = json.loads(Path(args.results).read_text())
    table = rows(data["results"])
    has_plot = plot(table, Path(args.png))
    meta = data["meta"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured {meta['time']} on Linux {meta['kernel']}, {meta['cpus']} CPUs, "
        f"Python {meta['python']}; cores written to an ext4 disk (page cache), files removed and "
        "`sync`ed between measurements. Each row is one process with that much resident "
        "anonymous memory and that many threads (idle ones plus the main thread; a native probe "
        "thread spins on the clock). All columns of a row were measured side by side in one run.",
        "",
        "Regenerate:",
        "",
        "```",
        COMMAND,
        "```",
        "",
        "| RSS MiB | threads | bare fork ms | pause ms (probe / own) | worst pause ms "
        "| freeze ms | target ms | core s | kernel core s | ratio | gcore s "
        "| blocks MiB (gencore / kernel / gcore) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['rss']} | {r['threads']} | {r['fork']:.2f} | {r['stall']:.2f} / "
            f"{r['pause']:.2f} | {r['worst']:.2f} | {r['freeze']:.2f} | {r['limit']:.2f} "
            f"{'ok' if r['pause_ok'] else 'MISSED'} | {r['publish']:.2f} | {r['kernel']:.2f} | "
            f"{r['ratio']:.2f} | {r['gcore']:.2f} | {mib(r['blocks'])} / {mib(r['kblocks'])} / "
            f"{mib(r['gblocks'])} |"
        )
    big = [r for r in table if r["rss"] >= 1024]
    lines += [
        "",
        "Targets:",
        "",
        f"- pause ≤ 1.2 × bare fork + 2 ms (median of repeats): "
        f"{sum(r['pause_ok'] for r in table)} of {len(table)} rows; with the worst repeat: "
        f"{sum(r['worst'] <= r['limit'] for r in table)} of {len(table)}.",
        f"- core published in ≤ 0.5 × the kernel's time at ≥ 1 GiB: worst ratio "
        f"{max((r['ratio'] for r in big), default=float('nan')):.2f}.",
        f"- allocated blocks ≤ the kernel's: worst gencore/kernel "
        f"{max(r['blocks'] / r['kblocks'] for r in table if r['kblocks'] > 0):.3f} "
        f"(largest excess {max((r['blocks'] - r['kblocks']) >> 10 for r in table)} KiB). The "
        "original method's core comes from a one-thread child, so it has one thread's register "
        "notes; gencore's has every thread's (about 3.3 KiB each with this CPU's XSAVE size).",
        "",
        "`pause (probe)` is the longest time the probe thread could not run, over the snapshot "
        "and the 50 ms after it; `pause (own)` is gencore's measure (freeze + fork); both are the "
        "median of the repeats, `worst pause` the largest of either over all repeats (usually "
        "the first snapshot of a process). `core s` is "
        "the median time until `create_core` returned a published core; `kernel core s` is the "
        "original method (a forked child killed by SIGSEGV, coredump_filter 0xff); gcore stops "
        "the process for the whole dump. The probe's idle noise floor was "
        f"{max(r['idle'] for r in table):.2f} ms at most.",
    ]
    if has_plot:
        lines += ["", f"![pause and completion]({Path(args.png).relative_to(ROOT)})"]
    bundle = Path(args.results).with_name("bundle.json")
    if bundle.exists():
        lines += bundle_section(json.loads(bundle.read_text()))
    Path(args.md).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
