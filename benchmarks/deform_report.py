"""Markdown report of a deformable benchmark run (bench_deformable.py's raw dict).

``raw`` holds ``machine`` (incl. ``case``: identity and truth errors), ``args``, ``runs``
(one record per tool on the 1 mm case) and ``scaling`` (napari_reg's models at several
voxel counts). Records carry ``time_s``, ``cpu_s``, ``peak_rss_mib``, ``delta_rss_mib``,
``export_s`` and the errors of deform_pairs.evaluate (world mm, fixed->moving), or
``error``. Ratios are within this one run.
"""

from __future__ import annotations

__all__ = ["render_markdown"]

OURS_PREFIX = "napari_reg"


def _peers_ok(runs: list[dict]) -> list[dict]:
    return [r for r in runs if not r["tool"].startswith(OURS_PREFIX) and "err_mean_mm" in r]


def _row(r: dict, best_err: float | None, fastest: float | None) -> str:
    if "err_mean_mm" not in r:
        error = str(r.get("error", "?")).replace("|", "/").replace("\n", " ")
        return f"| {r['tool']} | {error} |" + " - |" * 11
    e_ratio = f"{r['err_mean_mm'] / best_err:.2f}" if best_err else "-"
    t_ratio = f"{r['time_s'] / fastest:.2f}" if fastest else "-"
    return (f"| {r['tool']} | {r['time_s']:.1f} | {t_ratio} | {r['cpu_s']:.0f} | "
            f"{r['peak_rss_mib']:.0f} ({r['delta_rss_mib']:.0f}) | {r['err_mean_mm']:.3f} | "
            f"{e_ratio} | {r['err_max_mm']:.2f} | {r['dice_gm']:.3f} | {r['jac_min']:.3f} | "
            f"{r['folded_fraction']:.2e} | {r['export_s']:.1f} | {r.get('loadavg', '-')} |")


def _verdict(ok: bool, text: str) -> str:
    return f"{'yes' if ok else '**no**'} ({text})"


def render_markdown(raw: dict) -> str:
    """The results page: machine and case, the peer table, targets, scaling."""
    info, runs, scaling = raw["machine"], raw["runs"], raw.get("scaling", [])
    case = info["case"]
    ident, truth = case["identity"], case["truth"]
    ok_peers = _peers_ok(runs)
    best = min(ok_peers, key=lambda r: r["err_mean_mm"]) if ok_peers else None
    fastest = min(ok_peers, key=lambda r: r["time_s"]) if ok_peers else None
    best_err = best["err_mean_mm"] if best else None
    fast_t = fastest["time_s"] if fastest else None
    lines = [
        f"# Deformable benchmark, {info['date']}",
        "",
        f"Machine: {info['nproc']} cores ({info['cpu']}), {info['memory']} RAM, shared with "
        f"other engineers: load average {info['loadavg_start']} at start, "
        f"{info.get('loadavg_end', '?')} at end (1/5/15 min; per run in the last column). "
        "Absolute times carry that noise; ratios come from the same run. "
        f"Python {info['python']}, numpy {info['numpy']}, napari_reg at {info.get('git', '?')}. "
        f"Total {info.get('total_s', 0):.0f} s.",
        "",
        f"Case `{case['name']}`: MNI152 2009a 1 mm T1 {tuple(case['shape'])} warped by a known "
        f"smooth random field (two Gaussian-smoothed noise fields, sigmas 12 and 24 mm, max "
        f"{case['max_mm']:.2f} mm over the brain), mono-modal. Truth: T_true(x) = x + u(x), "
        "fixed -> moving world RAS mm; moving = fixed pulled through its numerical inverse "
        f"(residual {case['inverse_residual_mm']:.1e} mm). Truth's own min Jacobian "
        f"{truth['jac_min']:.3f} (brain+3 vox), {truth['jac_min_grid']:.3f} (grid); "
        f"GM Dice of the truth {truth['dice_gm']:.3f} (interpolation limit). "
        f"**Identity: mean error {ident['err_mean_mm']:.3f} mm, Dice {ident['dice_gm']:.3f}.**",
        "",
        "Each tool in its own fresh process, 2 threads. time / CPU / peak RSS = the "
        "registration call only (imports excluded); export s = reading the whole "
        "fixed->moving map back as a dense field (not timed in 'time'). error = mean "
        f"|T_est(x) - T_true(x)| over the {case['mask_voxels']} fixed brain-mask voxels "
        "(max next to it); Dice = fixed GM > 0.5 vs moving GM at T_est(x) > 0.5; min J / "
        "folded = Jacobian determinant of T_est over the brain mask dilated by 3 voxels, less "
        "voxels mapped outside the moving grid (folded = fraction with det <= 0).",
        "",
        "| tool | time s | time / fastest peer | CPU s | peak RSS MiB (delta) | error mm | "
        "error / best peer | max err mm | GM Dice | min J | folded | export s | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(r, best_err, fast_t) for r in runs]
    outside = [f"{r['tool']} {r['mask_outside']} ({r.get('mask_unknown', 0)} unknown)"
               for r in runs if r.get("mask_outside")]
    if outside:
        lines += ["", "Brain-mask voxels mapped outside the moving grid (the brain touches "
                  "the template's lowest slice; 'unknown' = ANTs/DIPY's read-back has no "
                  "value there, left out of their error): " + ", ".join(outside) + "."]
    if best and fastest:
        lines += ["", f"Best peer error: {best['tool']} {best_err:.3f} mm; fastest peer: "
                  f"{fastest['tool']} {fast_t:.1f} s.", "", "### Targets (issue #4)", "",
                  "| model | error <= best peer | no folds | time <= 0.5 x fastest peer | "
                  "peak RSS <= 2 GB |", "|---|---|---|---|---|"]
        for r in runs:
            if r["tool"].startswith(OURS_PREFIX) and "err_mean_mm" in r:
                err, t, rss, jmin = (r["err_mean_mm"], r["time_s"], r["peak_rss_mib"],
                                     r["jac_min"])
                lines.append(
                    f"| {r['tool']} | {_verdict(err <= best_err, f'{err:.3f} vs {best_err:.3f}')}"
                    f" | {_verdict(r['folded_fraction'] == 0, f'min J {jmin:.3f}')}"
                    f" | {_verdict(t <= 0.5 * fast_t, f'{t / fast_t:.2f} x')}"
                    f" | {_verdict(rss <= 2048, f'{rss:.0f} MiB')} |")
    if scaling:
        lines += ["", "## Scaling of napari_reg's models (same case resampled)", "",
                  "| model | voxel factor | grid | spacing mm | time s | CPU s | peak RSS MiB "
                  "(delta) | error mm | min J | load |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in scaling:
            head = (f"| {r['tool']} | {r['factor']:g} | {'x'.join(map(str, r['shape']))} | "
                    f"{r['spacing_mm']:.3f} |")
            if "err_mean_mm" in r:
                lines.append(f"{head} {r['time_s']:.1f} | {r['cpu_s']:.0f} | "
                             f"{r['peak_rss_mib']:.0f} ({r['delta_rss_mib']:.0f}) | "
                             f"{r['err_mean_mm']:.3f} | {r['jac_min']:.3f} | {r['loadavg']} |")
            else:
                lines.append(f"{head} {r.get('error', '?')} | - | - | - | - | - |")
    if not all(r.get("peak_reset", True) for r in runs + scaling):
        lines += ["", "Note: /proc/self/clear_refs was not writable: peak RSS covers the "
                  "whole child process."]
    return "\n".join(lines) + "\n"
