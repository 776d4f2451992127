"""The table of bench_responsiveness.py: medians per setting, live on and off."""

from __future__ import annotations

import numpy as np

__all__ = ["COLUMNS", "summarise"]

COLUMNS = [  # (header, row key, format, shown for live off too)
    ("CLI s", "cli_s", ".2f", True),
    ("core s", "core_s", ".2f", True),
    ("GUI/CLI", "gui_cli", ".2f", True),
    ("click to result s", "wall_s", ".2f", True),
    ("refreshes/s (optimising)", "opt_refresh_hz", ".1f", False),
    ("states/s (optimising)", "opt_states_hz", ".1f", True),
    ("refreshes/s (states coming)", "active_refresh_hz", ".1f", False),
    ("states/s (states coming)", "active_states_hz", ".1f", True),
    ("last stage refreshes/s", "last_refresh_hz", ".1f", False),
    ("last stage states/s", "last_states_hz", ".1f", True),
    ("behind p95 ms", "behind_p95_ms", ".0f", False),
    ("first frame s", "first_frame_s", ".2f", False),
    ("latency p99 ms", "latency_p99_ms", ".0f", True),
    ("end gap ms", "latency_max_whole_ms", ".0f", True),
    ("window paints/s", "paint_hz", ".1f", True),
    ("GUI thread in window events %", "window_share", ".0%", True),
    ("GUI thread CPU %", "gui_cpu_share", ".0%", True),
    ("GUI process CPU %", "proc_cpu_share", ".0%", True),
    ("load avg", "load", ".1f", True),
]


def summarise(rows: list[dict]) -> list[str]:
    """Markdown table of the medians per (version, busy, GIL interval, preset, live)."""
    keys = []
    for r in rows:
        key = (r.get("version", "-"), r["busy"], r["interval"], r["preset"])
        if key not in keys:
            keys.append(key)
    head = ["version", "busy", "GIL s", "preset", "live", *[c[0] for c in COLUMNS], "slowdown"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def pick(key: tuple, live: bool) -> list[dict]:
        return [r for r in rows if (r.get("version", "-"), r["busy"], r["interval"],
                                    r["preset"]) == key and r["live"] == live]

    for key in keys:
        on, off = pick(key, True), pick(key, False)
        for live, runs in ((True, on), (False, off)):
            if not runs:
                continue
            med = {c[1]: float(np.median([r.get(c[1], np.nan) for r in runs]))
                   for c in COLUMNS}
            cells = [format(med[k], f) if (live or both) else ""
                     for _, k, f, both in COLUMNS]
            slowdown = ""
            if live and off:
                ratio = float(np.median([r["core_s"] for r in on])) / float(
                    np.median([r["core_s"] for r in off]))
                slowdown = f"{100 * (ratio - 1):+.0f} %"
            version, busy, interval, preset = key
            lines.append("| " + " | ".join([str(version), str(busy),
                                            "-" if interval is None else str(interval),
                                            preset, "on" if live else "off", *cells,
                                            slowdown]) + " |")
    return lines
