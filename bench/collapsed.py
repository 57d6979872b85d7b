"""Summarise py-spy raw (collapsed) stacks: inclusive and self share per function.

Usage: python bench/collapsed.py OUT.txt [N] [FILTER]
"""

import collections
import sys

path = sys.argv[1]
top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
inclusive: collections.Counter[str] = collections.Counter()
own: collections.Counter[str] = collections.Counter()
total = 0
with open(path) as lines:
    text = lines.read().splitlines()
for line in text:
    stack, _, count = line.rstrip().rpartition(" ")
    n = int(count)
    total += n
    frames = [
        f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
        if " (" in f
        else f
        for f in stack.split(";")
    ]
    for frame in set(frames):
        inclusive[frame] += n
    own[frames[-1]] += n
print(f"{total} samples")
print("inclusive:")
for frame, n in inclusive.most_common(top):
    print(f"{100 * n / total:6.1f}%  {frame}")
print("self:")
for frame, n in own.most_common(top):
    print(f"{100 * n / total:6.1f}%  {frame}")
