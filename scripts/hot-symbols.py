#!/usr/bin/env python3
"""hot-symbols.py EXE CALLGRIND_OUT... > proxy/link/hot-symbols.txt

The functions of EXE that ran in the callgrind profiles (mangled names, as lld's
--symbol-ordering-file wants them), in their present address order, then every ring
assembly routine: valgrind's CPU lacks some features the real one has, so the variants
the proxy picks at run time (ADX, AVX-512) may not have run under it."""
import re
import subprocess
import sys

exe, profiles = sys.argv[1], sys.argv[2:]
ran = set()
for profile in profiles:
    names, objects, current = {}, {}, None
    lines = open(profile).read().splitlines()
    # Names are given once, at their first use (as fn, cfn, ob or cob), then by number.
    for line in lines:
        m = re.match(r"^c?(fn|ob)=\((\d+)\) (.*)$", line)
        if m:
            (names if m.group(1) == "fn" else objects)[m.group(2)] = m.group(3)
    for line in lines:
        m = re.match(r"^ob=\((\d+)\)", line)
        if m:
            current = objects.get(m.group(1), "")
            continue
        m = re.match(r"^fn=\((\d+)\)", line)
        if m and current.endswith("braid-proxy"):
            ran.add(names[m.group(1)])
address = {}
nm = subprocess.run(["nm", "--defined-only", exe], capture_output=True, text=True, check=True)
for line in nm.stdout.splitlines():
    fields = line.split()
    if len(fields) == 3 and fields[1] in "tTwW":
        address[fields[2]] = int(fields[0], 16)
hot = sorted((n for n in ran if n in address), key=address.get)
ring = sorted((n for n in address if n.startswith("ring_core_") and n not in ran), key=address.get)
print("\n".join(hot + ring))
print(f"hot-symbols: {len(hot)} functions ran, {len(ring)} more ring routines", file=sys.stderr)
