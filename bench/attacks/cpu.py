#!/usr/bin/env python3
# cpu.py SAMPLEFILE -> mean CPU% (of one core) and max RSS MiB
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
if len(rows) < 2: print('{}'); sys.exit()
t = [float(r[0]) for r in rows]; c = [int(r[1]) for r in rows]; rss = [int(r[2]) for r in rows]; tck = int(rows[0][3])
cpu = (c[-1] - c[0]) / tck / (t[-1] - t[0]) * 100
print('{"cpu_pct": %.0f, "rss_mib_start": %.0f, "rss_mib_max": %.0f}' % (cpu, rss[0] / 1024, max(rss) / 1024))
