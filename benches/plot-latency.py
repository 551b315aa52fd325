#!/usr/bin/env python3
"""Latency distribution plot (SVG) from keywire-load's --latency-out CSV files.

    python3 benches/plot-latency.py OUT.svg TITLE LABEL=FILE.csv [LABEL=FILE.csv ...]

x: percentile on a log scale of 1/(1-p) (so 90, 99, 99.9 and 99.99 are evenly spaced), y: latency
in ms (log scale). Standard library only, so the benchmark script needs nothing installed.
"""
import csv
import math
import sys

W, H = 900, 520
LEFT, RIGHT, TOP, BOTTOM = 80, 220, 50, 60
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]


def read(path):
    with open(path, newline="") as f:
        return [(float(r["percentile"]), float(r["latency_ms"])) for r in csv.DictReader(f)]


def main(argv):
    if len(argv) < 4:
        sys.exit(__doc__)
    out, title, series = argv[1], argv[2], []
    for arg in argv[3:]:
        label, _, path = arg.partition("=")
        series.append((label, read(path)))
    max_nines = 4.0  # up to 99.99
    xs = lambda p: LEFT + (W - LEFT - RIGHT) * min(max_nines, -math.log10(max(1e-9, 1 - p / 100))) / max_nines
    lats = [l for _, pts in series for _, l in pts if l > 0]
    lo = 10 ** math.floor(math.log10(min(lats)))
    hi = 10 ** math.ceil(math.log10(max(lats)))
    ys = lambda l: TOP + (H - TOP - BOTTOM) * (1 - (math.log10(max(l, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="24" text-anchor="middle" font-size="15">{title}</text>']
    for nines, label in enumerate(["0%", "90%", "99%", "99.9%", "99.99%"]):
        x = LEFT + (W - LEFT - RIGHT) * nines / max_nines
        svg.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{H - BOTTOM}" stroke="#ddd"/>')
        svg.append(f'<text x="{x:.1f}" y="{H - BOTTOM + 18}" text-anchor="middle">{label}</text>')
    decade = lo
    while decade <= hi * 1.0001:
        y = ys(decade)
        svg.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" stroke="#ddd"/>')
        svg.append(f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{decade:g} ms</text>')
        decade *= 10
    svg.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 15}" text-anchor="middle">percentile of requests</text>')
    svg.append(f'<text transform="translate(18 {(TOP + H - BOTTOM) / 2}) rotate(-90)" text-anchor="middle">latency (ms, log scale)</text>')
    for i, (label, pts) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{'M' if j == 0 else 'L'}{xs(p):.1f},{ys(l):.1f}" for j, (p, l) in enumerate(pts) if p <= 99.99)
        svg.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        y = TOP + 10 + 20 * i
        svg.append(f'<line x1="{W - RIGHT + 15}" y1="{y}" x2="{W - RIGHT + 40}" y2="{y}" stroke="{colour}" stroke-width="3"/>')
        svg.append(f'<text x="{W - RIGHT + 46}" y="{y + 4}">{label}</text>')
    svg.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main(sys.argv)
