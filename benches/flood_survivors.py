#!/usr/bin/env python3
"""What outlives a flood: blocks alive at T2 that were allocated in [T1, T2), by call stack.

Reads a heaptrack recording (`heaptrack -o OUT pasarela serve ...`, a build with
`--no-default-features` so that every allocation goes through malloc) and, for each allocation
site, counts the blocks allocated in the window that are still alive at its end (an upper bound:
heaptrack records a free against the site and size, not the block). T1 and T2 are milliseconds
on heaptrack's clock (the `c` lines): T1 just before the flood, T2 when the memory is read (the
bench reads it 60 s after the flood). The allocator's pages that such blocks keep are what stays
resident above idle (docs/benchmarks.md, session 16).

usage: flood_survivors.py RECORDING.zst T1_MS T2_MS [ROWS]
       ALL=1 (every block alive at T2, whenever allocated)  MINSIZE=N  DEPTH=N (frames shown)
"""
import collections
import os
import re
import subprocess
import sys


def main():
    path, t1, t2 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    rows_wanted = int(sys.argv[4]) if len(sys.argv) > 4 else 60
    every = bool(os.environ.get("ALL"))
    min_size = int(os.environ.get("MINSIZE", "0"))
    depth = int(os.environ.get("DEPTH", "6"))
    # heaptrack's interpreted format: s (string), i (instruction: ip, module, function, file,
    # line...), t (trace: ip index, parent), a (allocation site: size, trace), + / - (an
    # allocation / free at a site), c (time in ms); numbers in hex, strings 1-based, sites 0-based.
    proc = subprocess.Popen(["zstd", "-dc", path], stdout=subprocess.PIPE, text=True, errors="replace")
    strings, ips, traces, sites = [None], [None], [(0, 0)], []
    live, born = collections.Counter(), collections.Counter()
    now, done = 0, False
    for line in proc.stdout:
        kind = line[0]
        if kind == "+":
            site = int(line[2:], 16)
            if not done:
                live[site] += 1
            if t1 <= now < t2:
                born[site] += 1
        elif kind == "-":
            if not done:
                live[int(line[2:], 16)] -= 1
        elif kind == "c":
            now = int(line[2:], 16)
            done = done or now >= t2
        elif kind == "a":
            size, trace = line[2:].split()
            sites.append((int(size, 16), int(trace, 16)))
        elif kind == "t":
            ip, parent = line[2:].split()
            traces.append((int(ip, 16), int(parent, 16)))
        elif kind == "i":
            ips.append([int(x, 16) for x in line[2:].split()])
        elif kind == "s":
            parts = line[2:].rstrip("\n").split(" ", 1)
            strings.append(parts[1] if len(parts) > 1 else "")
    skip = re.compile(r"^(alloc::|core::|hashbrown::|std::|<alloc|<core|<hashbrown|__rust|_\$LT|\?|malloc|realloc|calloc|<std|heaptrack|<T as alloc|_RNv)")

    def name(ip_index):
        f = ips[ip_index] if ip_index < len(ips) else None
        if not f:
            return "?"
        if len(f) >= 3 and f[2] < len(strings) and strings[f[2]]:
            return re.sub(r"::h[0-9a-f]{16}$", "", strings[f[2]])
        return "0x%x" % f[0]

    def stack(trace):
        frames = []
        while trace and len(frames) < 40:
            ip, trace = traces[trace]
            frames.append(name(ip))
        return " <- ".join([f for f in frames if not skip.match(f)][:depth])

    by = collections.defaultdict(lambda: [0, 0])
    for site, n in live.items():
        if n <= 0 or site >= len(sites) or sites[site][0] < min_size:
            continue
        if not every:
            n = min(n, born[site])
        if n > 0:
            size, trace = sites[site]
            entry = by[(size, stack(trace))]
            entry[0] += n
            entry[1] += n * size
    print("blocks   bytes   size  allocated at")
    for (size, where), (n, total) in sorted(by.items(), key=lambda kv: -kv[1][0])[:rows_wanted]:
        print(f"{n:6d} {total:9d} {size:7d}  {where[:260]}")
    print("total", sum(v[0] for v in by.values()), "blocks,", sum(v[1] for v in by.values()), "bytes")


if __name__ == "__main__":
    main()
