"""Rewrites the README's performance numbers from report/REPORT.md: everything from "The latest
run" to "## Use it from Rust" becomes the report's date, commit and load, NOTE (what the run's
machine was, what to make of its noise), the report's summary, its charts and its tables (each
section's tables under a bold title; the prose and the grid stay in REPORT.md).

Usage: python3 tools/readme_perf.py NOTE"""
import re, sys

readme = open("README.md").read()
report = open("report/REPORT.md").read().splitlines()

m = re.search(r"on (\S+ \S+ UTC) at commit `(\w+)`, in (\d+) s", report[2])
date, commit, secs = m.groups()
load = next(l for l in report if l.startswith("| load average"))
before, after = re.search(r"before ([^;]+); after ([^|]+)\|", load).groups()

summary_start = report.index("## Summary") + 1
machine = report.index("## Machine")
body = [l for l in report[summary_start:machine] if l.strip()]
bullets = [l for l in body if l.startswith("-") or l.startswith("  -")]
images = [l.replace("](", "](report/") for l in body if l.startswith("![")]

sections = []
first = report.index("## Forward pass, 1 thread(s)")
grid = report.index("## The grid and its bounds")
title, tables, current = None, [], []
for line in report[first:grid] + ["## end"]:
    if line.startswith("## "):
        if current:
            tables.append(current)
        if title:
            sections.append(f"**{title}**\n\n" + "\n\n".join("\n".join(t) for t in tables))
        title, tables, current = line[3:], [], []
    elif line.startswith("|"):
        current.append(line)
    elif current:
        tables.append(current)
        current = []

head = (f"The latest run ({date}, commit `{commit}`, {secs} s, load average before "
        f"{before.strip()}; after {after.strip()}) ")
start = readme.index("The latest run")
end = readme.index("## Use it from Rust")
new = (head + sys.argv[1].strip() + "\n\n" + "\n".join(bullets) + "\n\n"
       + "\n\n".join(images) + "\n\n" + "\n\n".join(sections) + "\n\n")
open("README.md", "w").write(readme[:start] + new + readme[end:])
