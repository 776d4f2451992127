"""Markdown report of an affine benchmark run (tables, per-pair ratios, machine).

A record is the dict bench_affine.py collects per (pair, tool): ``tool``, ``pair``,
``modality``, ``init_tre_mm`` and either ``time_s``, ``peak_rss_mib``, ``delta_rss_mib``,
``tre_mm``, ``tre_max_mm`` (world mm, fixed->moving convention), ``version``,
``import_s`` or ``error``. Ratios are taken per pair (both tools in the same run), then
summarised by their median across pairs.
"""

from __future__ import annotations

from statistics import median

__all__ = ["render_markdown", "summarise"]

REF_TIME = "elastix"  # our time / elastix time: the speed bar
REF_TRE = "ants"  # our TRE / ANTs TRE: the accuracy bar


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _ratios(records: list[dict], tool: str, ref: str, key: str) -> list[float]:
    """Per-pair ``tool[key] / ref[key]`` where both ran."""
    by = {(r["pair"], r["tool"]): r for r in records}
    out = []
    for (pair, name), r in by.items():
        other = by.get((pair, ref))
        if name == tool and other and key in r and key in other and other[key] > 0:
            out.append(r[key] / other[key])
    return out


def summarise(records: list[dict]) -> list[dict]:
    """One row per (modality, tool): medians over pairs and per-pair ratio medians."""
    rows = []
    modalities = list(dict.fromkeys(r["modality"] for r in records))
    tools = list(dict.fromkeys(r["tool"] for r in records))
    for modality in modalities:
        sub = [r for r in records if r["modality"] == modality]
        for tool in tools:
            runs = [r for r in sub if r["tool"] == tool]
            ok = [r for r in runs if "tre_mm" in r]
            row: dict = {"modality": modality, "tool": tool, "n": len(ok), "n_runs": len(runs)}
            if ok:
                row["time_s"] = median(r["time_s"] for r in ok)
                row["time_range"] = (min(r["time_s"] for r in ok), max(r["time_s"] for r in ok))
                row["cpu_s"] = median(r.get("cpu_s", float("nan")) for r in ok)
                row["peak_rss_mib"] = max(r["peak_rss_mib"] or 0 for r in ok)
                row["delta_rss_mib"] = max(r["delta_rss_mib"] or 0 for r in ok)
                row["tre_mm"] = sum(r["tre_mm"] for r in ok) / len(ok)
                row["tre_range"] = (min(r["tre_mm"] for r in ok), max(r["tre_mm"] for r in ok))
                t_ratio = _ratios(sub, tool, REF_TIME, "time_s")
                c_ratio = _ratios(sub, tool, REF_TIME, "cpu_s")
                e_ratio = _ratios(sub, tool, REF_TRE, "tre_mm")
                row["time_vs_ref"] = median(t_ratio) if t_ratio else None
                row["cpu_vs_ref"] = median(c_ratio) if c_ratio else None
                row["tre_vs_ref"] = median(e_ratio) if e_ratio else None
            errors = [r["error"] for r in runs if "error" in r]
            if errors:
                row["error"] = errors[0]
            rows.append(row)
    return rows


def render_markdown(records: list[dict], info: dict, args: dict) -> str:
    """The full results page: machine, method, summary and per-run tables."""
    lines = [
        f"# Affine benchmark, {info['date']}",
        "",
        f"Machine: {info['nproc']} cores ({info['cpu']}), {info['memory']} RAM; load average "
        f"{info['loadavg_start']} at start, {info.get('loadavg_end', '?')} at end (the "
        "machine is shared, so absolute times carry noise; ratios come from the same run). "
        f"Python {info['python']}, numpy {info['numpy']}. "
        f"Total run {info.get('total_s', 0):.0f} s.",
        "",
        f"Command: `bench_affine.py --pairs {args['pairs']} --seed {args['seed']} --tools "
        f"{','.join(args['tools'])}`. Pairs: MNI152 2009a 1 mm T1 (197x233x189) vs itself "
        "(T1-T1) or a T2-like contrast with 2 % noise (T1-T2like), the latter also under a "
        "smooth +-10 % multiplicative bias field (T1-T2like+bias, held-out-like), moved "
        "by a known random affine (rotation <= 12 deg, translation <= 15 mm, scale <= 8 %, "
        "shear <= 0.04). "
        "Each tool runs in its own fresh process with 2 threads; time = wall time of the "
        "registration call (image objects from numpy -> transform read back), imports "
        "excluded; CPU = user + system seconds of all threads over that call; peak RSS "
        "= kernel VmHWM during the call (delta = above the RSS before it). TRE = mean "
        "|T_est(x) - T_true(x)| over the 1.73 M brain-mask voxels, world mm.",
        "",
        "## Summary (per modality; medians over pairs, TRE = mean over pairs)",
        "",
        f"| modality | tool | ok/runs | time s (range) | time / {REF_TIME} | CPU s | "
        f"CPU / {REF_TIME} | peak RSS MiB (delta) | TRE mm (range) | TRE / {REF_TRE} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summarise(records):
        if row["n"]:
            tr, er = row["time_range"], row["tre_range"]
            lines.append(
                f"| {row['modality']} | {row['tool']} | {row['n']}/{row['n_runs']} | "
                f"{row['time_s']:.1f} ({tr[0]:.1f}-{tr[1]:.1f}) | "
                f"{_f(row['time_vs_ref'], '.2f')} | {row['cpu_s']:.1f} | "
                f"{_f(row['cpu_vs_ref'], '.2f')} | {row['peak_rss_mib']:.0f} "
                f"({row['delta_rss_mib']:.0f}) | {row['tre_mm']:.3f} ({er[0]:.3f}-{er[1]:.3f}) | "
                f"{_f(row['tre_vs_ref'], '.2f')} |"
            )
        else:
            lines.append(
                f"| {row['modality']} | {row['tool']} | 0/{row['n_runs']} | "
                f"{row.get('error', 'no run')} | - | - | - | - | - | - |"
            )
    lines += [
        "",
        "## Every run",
        "",
        "| pair | initial TRE mm | tool | version | import s | time s | CPU s | peak RSS MiB | "
        "delta MiB | TRE mm | max error mm |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        head = f"| {r['pair']} | {r['init_tre_mm']:.2f} | {r['tool']} | {r.get('version', '-')} |"
        if "tre_mm" in r:
            lines.append(
                f"{head} {r['import_s']:.1f} | {r['time_s']:.2f} | {_f(r.get('cpu_s'), '.1f')} | "
                f"{r['peak_rss_mib']:.0f} | "
                f"{_f(r.get('delta_rss_mib'), '.0f')} | {r['tre_mm']:.3f} | {r['tre_max_mm']:.3f} |"
            )
        else:
            error = str(r.get("error", "?")).replace("|", "/").replace("\n", " ")
            lines.append(f"{head} - | - | - | - | - | {error} | - |")
    if not all(r.get("peak_reset", True) for r in records):
        lines += [
            "",
            "Note: /proc/self/clear_refs was not writable: peak RSS covers the "
            "whole child process lifetime (imports and loading included).",
        ]
    return "\n".join(lines) + "\n"
