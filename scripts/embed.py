#!/usr/bin/env python3
"""embed.py SYMBOL INPUT OUTPUT -- writes a C file defining
`const char SYMBOL[]` with INPUT's bytes (the build embeds etc/ defaults)."""
import sys

sym, src, dst = sys.argv[1:4]
data = open(src, "rb").read()
with open(dst, "w") as f:
    f.write(f"/* generated from {src.split('/')[-1]} by scripts/embed.py: do not edit */\n")
    f.write(f"const char {sym}[] =\n")
    for line in data.splitlines(keepends=True):
        esc = "".join(chr(b) if 32 <= b < 127 and chr(b) not in '"\\?' else f"\\{b:03o}"
                      for b in line)
        f.write(f'    "{esc}"\n')
    f.write("    ;\n")
