#!/usr/bin/env python3
"""clipql classify on the same images with two binaries, interleaved, in one
run: the median of each binary's wall times."""
import os, statistics, subprocess, sys, time
binaries = sys.argv[1:3]
photos, model, rounds = sys.argv[3], sys.argv[4], int(sys.argv[5])
labels = ["a photo of a cat", "a photo of a dog", "a photo of an astronaut",
          "a photo of a coffee cup", "a rocket", "a clock"]
n = len(os.listdir(photos))
times = {b: [] for b in binaries}
for r in range(rounds + 1):
    for b in (binaries if r % 2 == 0 else binaries[::-1]):
        out = f"/tmp/bench-out-{os.path.basename(b)}.parquet"
        if os.path.exists(out):
            os.remove(out)
        t = time.perf_counter()
        p = subprocess.run([b, "classify", photos, "--model", model, "--labels", *labels,
                            "--output", out, "--quiet"], capture_output=True, text=True)
        dt = time.perf_counter() - t
        if p.returncode != 0:
            sys.exit(f"{b}: exit {p.returncode}: {p.stderr[-2000:]}")
        if r > 0:  # round 0 warms the page cache and the logit_scale cache
            times[b].append(dt)
for b in binaries:
    m = statistics.median(times[b])
    print(f"{os.path.basename(b)}: {n} images, median {m:.2f}s of {rounds} "
          f"({n / m:.1f} img/s), runs {[round(x, 2) for x in times[b]]}")
