"""Markdown report of a real-anatomy benchmark run (bench_real.py's raw dict).

``raw`` holds ``machine``, ``args``, ``pairs`` (grids, brain sizes), ``runs`` (one record
per tool and pair: time, CPU, RSS and real_pairs.score's fields, or ``error``), and
``sample`` (the shipped affine-truth pair: errors against the truth). Ratios are to
greedy on the same pair in the same run.
"""

from __future__ import annotations

__all__ = ["render_markdown"]

OURS = "napari_reg"
REFERENCE = "greedy"


def _cell(text) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def _pair_table(name: str, runs: list[dict]) -> list[str]:
    ref = next((r for r in runs if r["tool"] == REFERENCE and "dice_mean" in r), None)
    lines = [f"### {name}", "",
             "| tool | time s | time / greedy | CPU s | peak RSS MiB | Dice CSF | Dice GM | "
             "Dice WM | **mean Dice** | - greedy | NCC brain | min J | folded brain | "
             "folded grid | load |", "|---" * 15 + "|"]
    for r in runs:
        if "dice_mean" not in r:
            lines.append(f"| {r['tool']} | {_cell(r.get('error', '?'))} |" + " - |" * 13)
            continue
        t_ratio = f"{r['time_s'] / ref['time_s']:.2f}" if ref else "-"
        d_diff = f"{r['dice_mean'] - ref['dice_mean']:+.3f}" if ref else "-"
        lines.append(
            f"| {r['tool']} | {r['time_s']:.1f} | {t_ratio} | {r['cpu_s']:.1f} | "
            f"{r['peak_rss_mib']:.0f} | {r['dice_CSF']:.3f} | {r['dice_GM']:.3f} | "
            f"{r['dice_WM']:.3f} | **{r['dice_mean']:.3f}** | {d_diff} | "
            f"{r['ncc_brain']:.3f} | {r['jac_min']:.3g} | {r['folded_brain']:.2e} | "
            f"{r['folded_grid']:.2e} | {r.get('loadavg', '-')} |")
    return lines + [""]


def _summary(raw: dict) -> list[str]:
    pairs = [p["name"] for p in raw["pairs"]]
    tools = list(dict.fromkeys(r["tool"] for r in raw["runs"]))
    by = {(r["pair"], r["tool"]): r for r in raw["runs"] if "dice_mean" in r}
    lines = ["## Summary over the pairs", "",
             "Mean over the pairs that ran; time ratios = geometric mean of the per-pair "
             "wall (CPU) time / greedy's (CPU time is the steadier on a shared machine); "
             "folded = the worst pair's folded fraction of the fixed brain.",
             "", "| tool | pairs | mean Dice | - greedy | time / greedy | CPU / greedy | "
             "worst min J | worst folded brain |", "|---|---|---|---|---|---|---|---|"]
    import math

    for tool in tools:
        got = [p for p in pairs if (p, tool) in by]
        if not got:
            lines.append(f"| {tool} | 0 | - | - | - | - | - | - |")
            continue
        dice = sum(by[p, tool]["dice_mean"] for p in got) / len(got)
        with_ref = [p for p in got if (p, REFERENCE) in by]
        diff = (sum(by[p, tool]["dice_mean"] - by[p, REFERENCE]["dice_mean"]
                    for p in with_ref) / len(with_ref)) if with_ref else float("nan")
        def geo(key: str, with_ref=with_ref, tool=tool) -> float:
            if not with_ref:
                return float("nan")
            return math.exp(sum(math.log(by[p, tool][key] / by[p, REFERENCE][key])
                                for p in with_ref) / len(with_ref))

        ratio, cpu_ratio = geo("time_s"), geo("cpu_s")
        jmin = min(by[p, tool]["jac_min"] for p in got)
        fold = max(by[p, tool]["folded_brain"] for p in got)
        lines.append(f"| {tool} | {len(got)} | {dice:.3f} | {diff:+.3f} | {ratio:.2f} | "
                     f"{cpu_ratio:.2f} | {jmin:.3g} | {fold:.2e} |")
    # issue 12's targets, per pair
    lines += ["", "### Targets (issue 12), per pair", "",
              "| pair | every napari_reg deformable folds nowhere | best napari_reg deformable "
              "(mean Dice) vs greedy | in no more time (wall; CPU) |", "|---|---|---|---|"]
    for p in pairs:
        ours = [by[p, t] for t in tools if t.startswith(OURS) and t != "napari_reg_affine"
                and (p, t) in by]
        ref = by.get((p, REFERENCE))
        if not ours or ref is None:
            continue
        no_fold = all(r["folded_brain"] == 0 and r["folded_grid"] == 0 for r in ours)
        best = max(ours, key=lambda r: r["dice_mean"])
        ok_dice = best["dice_mean"] >= ref["dice_mean"]
        ok_time = best["time_s"] <= ref["time_s"]
        lines.append(
            f"| {p} | {'yes' if no_fold else '**no**'} | "
            f"{'yes' if ok_dice else '**no**'} ({best['tool']} {best['dice_mean']:.3f} vs "
            f"{ref['dice_mean']:.3f}) | {'yes' if ok_time else '**no**'} "
            f"({best['time_s'] / ref['time_s']:.2f} x; CPU "
            f"{best['cpu_s'] / ref['cpu_s']:.2f} x) |")
    return lines + [""]


def _sample(raw: dict) -> list[str]:
    runs = raw.get("sample") or []
    if not runs:
        return []
    ident = raw.get("sample_identity", {})
    affine = next((r for r in runs if r["tool"] == "napari_reg_affine" and "err_brain_mm" in r),
                  None)
    lines = ["## Do no harm: the shipped sample pair (truth is affine)", "",
             "src/napari_reg/data: fixed MNI T1 (2 mm) vs a T2-like contrast moved by a known "
             "affine (scripts/make_sample_data.py). Every deformation a deformable stage "
             "adds is error. error = mean |T_est(x) - T_true(x)| over the fixed brain (and "
             f"the whole fixed grid); identity: {ident.get('err_brain_mm', float('nan')):.2f} "
             f"mm ({ident.get('err_grid_mm', float('nan')):.2f} grid). Target: the deformable "
             "presets within 0.1 mm of the affine preset's error.", "",
             "| tool | time s | error brain mm | - affine preset | error grid mm | max brain "
             "mm | min J | max J | folded grid |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        if "err_brain_mm" not in r:
            lines.append(f"| {r['tool']} | {_cell(r.get('error', '?'))} |" + " - |" * 7)
            continue
        diff = f"{r['err_brain_mm'] - affine['err_brain_mm']:+.3f}" if affine else "-"
        lines.append(f"| {r['tool']} | {r['time_s']:.1f} | {r['err_brain_mm']:.3f} | {diff} | "
                     f"{r['err_grid_mm']:.3f} | {r['err_brain_max_mm']:.2f} | "
                     f"{r['jac_min']:.3f} | {r['jac_max']:.2f} | {r['folded_grid']:.2e} |")
    return lines + [""]


def render_markdown(raw: dict) -> str:
    info = raw["machine"]
    lines = [
        f"# Real-anatomy deformable benchmark, {info['date']}", "",
        f"Machine: {info['nproc']} cores ({info['cpu']}), {info['memory']} RAM, shared: load "
        f"{info['loadavg_start']} at start, {info.get('loadavg_end', '?')} at end (per run in "
        f"the last column). Python {info['python']}, numpy {info['numpy']}, napari_reg at "
        f"{info.get('git', '?')}. Total {info.get('total_s', 0):.0f} s. Each tool in a fresh "
        "process with 2 threads; time = the registration call only.", "",
        "Score (benchmarks/real_pairs.py, the same for every tool): 3-class k-means tissue "
        "labels inside each image's brain mask; Dice of the fixed labels with the moving "
        "labels warped nearest-neighbour by the tool's own whole fixed->moving map; NCC of "
        "fixed and warped moving inside the fixed brain; Jacobian determinant of the whole "
        "map (min over the grid; folded = fraction with det <= 0 of the fixed brain / grid).",
        "",
    ]
    lines += _summary(raw)
    lines += ["## Per pair", ""]
    for p in raw["pairs"]:
        runs = [r for r in raw["runs"] if r.get("pair") == p["name"]]
        lines += [f"Fixed grid {tuple(p['fixed_shape'])}, moving {tuple(p['moving_shape'])}, "
                  f"{p['spacing_mm']:g} mm; fixed brain {p['fixed_brain_voxels']} voxels.", ""]
        lines += _pair_table(p["name"], runs)
    lines += _sample(raw)
    return "\n".join(lines) + "\n"
