#!/usr/bin/env python3
"""ClipQL against what people would otherwise run, in one run on one machine.

Run it with ``cargo xtask bench``, which provisions everything first (a Python
environment from PyPI, the full-size random ViT-B/32, a release build of
``clipql``) and then calls this script. Directly::

    python bench/compare.py --clipql target/release/clipql \\
        --model .clipql/models/clip-vit-base-patch32-random --out BENCHMARKS.md

What it does:

* **Workloads**, generated deterministically from ``tests/fixtures/photos``:
  (a) JPEGs of about 500x375, (b) 4000x3000 phone-sized JPEGs, (c) workload
  (a) with 1,000 labels instead of 9. Every image has its own bytes, so no
  cache can answer for another.
* **Contenders**, each a separate process (so that peak RSS is its own):
  ``clipql classify``, the same work through ``clipql sql``, transformers'
  ``pipeline("zero-shot-image-classification")`` (torch CPU, batch 16), a
  plain onnxruntime-python loop (CLIPImageProcessor, then the vision tower in
  batches of 16, texts embedded once), and the bare ONNX Runtime vision
  session on ready-made ``pixel_values`` (the ceiling for anything built on
  ORT). Every one gets the same thread count.
* **Interleaved**: each round runs every contender on N images and then on
  3N, rotating the order between rounds. Throughput is
  (3N - N) / (median time(3N) - median time(N)), so start-up cost cancels.
* **Metrics**: images/s, peak RSS (``wait4``), time to the first result, and
  how many times the text tower ran.

It writes BENCHMARKS.md and the raw numbers as JSON next to the workloads.
"""

import argparse
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "tests" / "fixtures" / "photos"
TEMPLATE = "a photo of a {}."
LABELS_9 = ["cat", "dog", "rocket", "cup of coffee", "page of text", "astronaut", "horse", "coins", "camera"]
BATCH = 16
TEXT_BATCH = 64  # the ORT loop's text batch; what it costs is once per run
LOGIT_SCALE = 100.0  # the generator's trained-style value; it does not change speed

# --------------------------------------------------------------------------
# Workloads


def labels_1000(model: Path):
    """1,000 distinct English words from the model's own vocabulary, spread
    evenly over it: deterministic, and each a single real token."""
    vocab = json.loads((model / "tokenizer.json").read_text())["model"]["vocab"]
    words = sorted({t[:-4] for t in vocab if re.fullmatch(r"[a-z]{4,12}</w>", t)})
    step = len(words) / 1000
    return [words[int(i * step)] for i in range(1000)]


def make_images(out: Path, count: int, size, seed: int, noise: float):
    """`count` JPEGs of `size`, each a different crop, flip and tint of a
    fixture photo plus sensor-like noise: distinct bytes, photo-like content
    and file sizes."""
    import numpy as np
    from PIL import Image

    stamp = out / ".done"
    want = f"{count} {size} {seed} {noise}"
    if stamp.is_file() and stamp.read_text() == want:
        return
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    sources = []
    for p in sorted(PHOTOS.iterdir()):
        try:
            with Image.open(p) as im:
                sources.append(im.convert("RGB"))
        except Exception:
            continue  # not an image (the licence file)
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    w, h = size
    for i in range(count):
        src = sources[i % len(sources)]
        sw, sh = src.size
        cw, ch = int(sw * rng.uniform(0.6, 1.0)), int(sh * rng.uniform(0.6, 1.0))
        x, y = rng.randint(0, sw - cw), rng.randint(0, sh - ch)
        im = src.crop((x, y, x + cw, y + ch)).resize((w, h), Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        a = np.asarray(im, dtype=np.float32)
        a = a * np.array([rng.uniform(0.85, 1.15) for _ in range(3)], dtype=np.float32)
        if noise:
            a = a + nrng.normal(0, noise, a.shape).astype(np.float32)
        Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(out / f"{i:05d}.jpg", quality=90)
    stamp.write_text(want)


def workload(root: Path, name: str, n: int, size, noise: float):
    """`root/name/n` holds the first N images of `root/name/n3` (hard links).
    The images are made in a child process: the harness stays small, so that
    what its children inherit at fork does not show in their peak RSS."""
    n3 = root / name / "n3"
    cmd = [sys.executable, __file__, "make-images", n3, 3 * n, size[0], size[1], sum(map(ord, name)), noise]
    subprocess.run([str(c) for c in cmd], check=True)
    small = root / name / "n"
    if small.exists():
        shutil.rmtree(small)
    small.mkdir()
    for p in sorted(n3.glob("*.jpg"))[:n]:
        os.link(p, small / p.name)
    return {"n": small, "n3": n3}


# --------------------------------------------------------------------------
# Contenders that run in their own Python process


def first_row():
    """Tells the harness that the first result is ready."""
    print("first-row", flush=True)


def peak_rss_mb():
    """This process's peak resident set (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def contender_pipeline(args):
    import torch
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizerFast, pipeline

    torch.set_num_threads(args.threads)
    model = CLIPModel.from_pretrained(args.model / "torch").eval()
    batch = args.batch
    runs = [0]
    model.text_model.register_forward_hook(lambda *_: runs.__setitem__(0, runs[0] + 1))
    pipe = pipeline(
        "zero-shot-image-classification",
        model=model,
        tokenizer=CLIPTokenizerFast.from_pretrained(args.model),
        image_processor=CLIPImageProcessor.from_pretrained(args.model),
        device="cpu",
    )
    labels = read_labels(args.labels)
    images = sorted(str(p) for p in args.images.glob("*.jpg"))
    done = 0
    with torch.inference_mode():
        for _ in pipe(images, candidate_labels=labels, hypothesis_template=TEMPLATE, batch_size=batch):
            if done == 0:
                first_row()
            done += 1
    return {"images": done, "text_runs": runs[0], "rss_mb": peak_rss_mb()}


def ort_session(path: Path, threads: int, opt="all", spin=True):
    """A CPU session with ORT's defaults (all graph optimisations, spinning
    worker threads) but `threads` intra-op threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[opt]
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def tower(args, name):
    suffix = {"fp32": "", "quantized": "_quantized"}[args.dtype]
    return args.model / "onnx" / f"{name}{suffix}.onnx"


def contender_ort_loop(args):
    import numpy as np
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPTokenizerFast

    processor = CLIPImageProcessor.from_pretrained(args.model)
    tokenizer = CLIPTokenizerFast.from_pretrained(args.model)
    vision = ort_session(tower(args, "vision_model"), args.threads)
    text = ort_session(tower(args, "text_model"), args.threads)
    prompts = [TEMPLATE.format(label) for label in read_labels(args.labels)]
    runs = 0
    texts = []
    for i in range(0, len(prompts), TEXT_BATCH):
        # Padded to the longest prompt of the batch, as the pipeline does.
        tok = tokenizer(prompts[i : i + TEXT_BATCH], padding=True, truncation=True, max_length=77, return_tensors="np")
        feeds = {"input_ids": tok["input_ids"].astype(np.int64), "attention_mask": tok["attention_mask"].astype(np.int64)}
        feeds = {k: v for k, v in feeds.items() if k in {i.name for i in text.get_inputs()}}
        texts.append(text.run(["text_embeds"], feeds)[0])
        runs += 1
    t = np.concatenate(texts)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    images = sorted(args.images.glob("*.jpg"))
    done = 0
    for i in range(0, len(images), BATCH):
        batch = [Image.open(p).convert("RGB") for p in images[i : i + BATCH]]
        pixels = processor(images=batch, return_tensors="np")["pixel_values"]
        e = vision.run(["image_embeds"], {"pixel_values": pixels})[0]
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        logits = LOGIT_SCALE * e @ t.T
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p.argmax(axis=1)
        if done == 0:
            first_row()
        done += len(batch)
    return {"images": done, "text_runs": runs, "rss_mb": peak_rss_mb()}


def contender_bare_ort(args):
    import numpy as np

    vision = ort_session(tower(args, "vision_model"), args.threads, opt=args.opt, spin=not args.no_spin)
    n = args.count
    # One random tensor per batch length, made before any run and reused:
    # the ceiling does nothing per image but run the session.
    rng = np.random.default_rng(0)
    lengths = [min(args.batch, n - i) for i in range(0, n, args.batch)]
    tensors = {k: rng.standard_normal((k, 3, 224, 224), dtype=np.float32) for k in set(lengths)}
    done = 0
    for k in lengths:
        b = tensors[k]
        vision.run(["image_embeds"], {"pixel_values": b})
        if done == 0:
            first_row()
        done += len(b)
    return {"images": done, "text_runs": None, "rss_mb": peak_rss_mb()}


def read_labels(path: Path):
    return [line for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------
# The harness


class Run:
    """One process: wall time, peak RSS, time to first result, text runs."""

    def __init__(self, cmd, env=None):
        self.cmd = [str(c) for c in cmd]
        start = time.perf_counter()
        err = tempfile.TemporaryFile()
        p = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=err, env=env, text=True)
        self.first = None
        out = []
        for line in p.stdout:
            if line.strip() == "first-row" and self.first is None:
                self.first = time.perf_counter() - start
            out.append(line)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        self.wall = time.perf_counter() - start
        # ru_maxrss also counts the harness's pages before exec; the harness
        # keeps itself small, and contenders report their own VmHWM where
        # they can.
        self.rss_mb = usage.ru_maxrss / 1024
        err.seek(0)
        self.stderr = err.read().decode(errors="replace")
        self.stdout = "".join(out)
        if p.returncode not in (0,):
            sys.exit(f"{' '.join(self.cmd)} failed ({p.returncode}):\n{self.stderr[-3000:]}")
        self.text_runs = None
        self.result = None
        if self.stdout.strip().splitlines() and self.stdout.strip().splitlines()[-1].startswith("{"):
            self.result = json.loads(self.stdout.strip().splitlines()[-1])
            self.text_runs = self.result.get("text_runs")
            self.rss_mb = self.result.get("rss_mb") or self.rss_mb
        self.parse_verbose()

    def parse_verbose(self):
        """clipql --verbose: first row and text-tower runs from its breakdown."""
        m = re.search(r"^run: .*first row after ([\d.]+)s.* rows in ([\d.]+)s", self.stderr, re.M)
        if m:
            # Process start-up before `run` began, plus the first row inside it.
            startup = self.wall - float(m.group(2))
            self.first = startup + float(m.group(1))
        m = re.search(r"^peak RSS: (\d+) MB", self.stderr, re.M)
        if m:
            self.rss_mb = float(m.group(1))
        m = re.search(r"^text tower: (\d+) runs", self.stderr, re.M)
        if m:
            self.text_runs = int(m.group(1))
        m = re.search(r"text_tower_runs=(\d+)", self.stdout)
        if m:
            self.text_runs = int(m.group(1))


class Contender:
    def __init__(self, name, make_cmd, group):
        self.name, self.make_cmd, self.group = name, make_cmd, group
        self.runs = {"n": [], "n3": []}


def python_cmd(kind, args, images, labels, extra=()):
    return [sys.executable, __file__, "contender", kind, "--model", args.model, "--images", images,
            "--labels", labels, "--threads", args.threads, *extra]


def clipql_classify(args, images, labels, work, extra=()):
    out = Path(work) / f"out-{random.random():.9f}.parquet"
    return [args.clipql, "classify", images, "--model", args.model, "--labels-file", labels,
            "--template", TEMPLATE, "--output", out, "--quiet", "--verbose", *extra]


def clipql_sql(args, images, labels, work, dtype="fp32"):
    out = Path(work) / f"sql-{random.random():.9f}.parquet"
    quoted = ", ".join("'" + TEMPLATE.format(l).replace("'", "''") + "'" for l in read_labels(labels))
    script = Path(work) / f"q-{random.random():.9f}.sql"
    script.write_text(
        f"SET clip.model = '{args.model}';\n"
        f"SET clip.dtype = '{dtype}';\n"
        f"CREATE EXTERNAL TABLE images STORED AS IMAGE LOCATION '{images}/';\n"
        f"EXPLAIN ANALYZE COPY (SELECT path, clip_scores(image, [{quoted}]) AS scores, "
        f"clip_image_error(image) AS error FROM images) TO '{out}' STORED AS PARQUET;\n"
    )
    return [args.clipql, "sql", "--format", "csv", "-f", script]


def throughput(wall_n, wall_3n, n, stat=statistics.median):
    """Images/s from the N and 3N wall times; `stat` picks the run of each
    (median by default; min gives the least disturbed runs)."""
    t1, t3 = stat(wall_n), stat(wall_3n)
    return (3 * n - n) / (t3 - t1) if t3 > t1 else float("nan")


def run_group(title, contenders, sizes, n_of, rounds):
    """Round-robin: every contender on N, then on 3N, order rotated per round."""
    for r in range(rounds):
        order = contenders[r % len(contenders):] + contenders[: r % len(contenders)]
        for size in ("n", "n3"):
            for c in order:
                cmd = c.make_cmd(sizes[c.name][size], size)
                run = Run(cmd)
                c.runs[size].append(run)
                print(f"[{title}] round {r + 1}/{rounds} {c.name} {size}: {run.wall:.2f}s "
                      f"rss {run.rss_mb:.0f} MB", flush=True)
    out = {}
    for c in contenders:
        n = n_of[c.name]
        firsts = [r.first for r in c.runs["n"] if r.first is not None]
        out[c.name] = {
            "images_per_s": throughput([r.wall for r in c.runs["n"]], [r.wall for r in c.runs["n3"]], n),
            "n": n,
            "wall_n": [r.wall for r in c.runs["n"]],
            "wall_3n": [r.wall for r in c.runs["n3"]],
            "rss_mb": max(r.rss_mb for r in c.runs["n3"]),
            "first_row_s": statistics.median(firsts) if firsts else None,
            "text_runs": c.runs["n3"][-1].text_runs,
        }
    return out


def machine():
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    flags = Path("/proc/cpuinfo").read_text()
    mem = next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal"))
    # Imported in a child: torch alone would make the harness large.
    versions = json.loads(subprocess.run(
        [sys.executable, "-c", "import json, onnxruntime, torch, transformers; print(json.dumps("
         "[onnxruntime.__version__, torch.__version__, transformers.__version__]))"],
        check=True, capture_output=True, text=True).stdout)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "avx2": " avx2 " in flags,
        "avx512_vnni": "avx512_vnni" in flags or "avx_vnni" in flags,
        "memory": mem.split(":", 1)[1].strip(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": versions[0],
        "torch": versions[1],
        "transformers": versions[2],
        "commit": commit,
        "loadavg_start": os.getloadavg(),
    }


def cosine_fast_jpeg(args, images, work):
    """Embedding cosine between full and DCT-scaled decoding, per image."""

    def embed(extra):
        out = Path(work) / f"emb-{random.random():.9f}.jsonl"
        Run([args.clipql, "embed", images, "--model", args.model, "--output", out, "--quiet", *extra])
        rows = [json.loads(l) for l in out.read_text().splitlines()]
        return {r["path"]: r["embedding"] for r in rows}

    def cosine(a, b):
        dot = sum(x * y for x, y in zip(a, b))
        return dot / (sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5)

    full, fast = embed([]), embed(["--fast-jpeg"])
    cos = [cosine(full[k], fast[k]) for k in full]
    return {"min": min(cos), "median": statistics.median(cos), "images": len(cos)}


def bench(args):
    args.model = args.model.resolve()
    args.clipql = Path(args.clipql).resolve()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="clipql-bench-", dir=work))
    info = machine()
    print(json.dumps(info, indent=1), flush=True)
    labels9 = work / "labels-9.txt"
    labels9.write_text("\n".join(LABELS_9) + "\n")
    labels1000 = work / "labels-1000.txt"
    labels1000.write_text("\n".join(labels_1000(args.model)) + "\n")

    n = args.n
    print("generating workloads...", flush=True)
    a = workload(work / "workloads", "a", n, (500, 375), noise=2.0)
    b = workload(work / "workloads", "b", args.n_phone, (4000, 3000), noise=3.0)
    results = {"machine": info, "n": n, "n_phone": args.n_phone, "n_pipeline_1000": args.n_pipeline_1000,
               "n_pipeline_1000_batch1": args.n_pipeline_1000_batch1,
               "rounds": args.rounds, "threads": args.threads, "command": args.command}

    def py(kind, labels, extra=()):
        return lambda images, size: python_cmd(kind, args, images, labels, extra)

    def bare(dtype, extra=()):
        def cmd(images, size):
            count = len(list(Path(images).glob("*.jpg")))
            return [sys.executable, __file__, "contender", "bare-ort", "--model", args.model, "--images", images,
                    "--labels", labels9, "--threads", args.threads, "--count", count, "--dtype", dtype, *extra]
        return cmd

    def cq(labels, extra=()):
        return lambda images, size: clipql_classify(args, images, labels, tmp, extra)

    # (a): every contender, fp32 and int8, plus the settings evidence.
    a_contenders = [
        Contender("clipql classify", cq(labels9), "a"),
        Contender("clipql sql", lambda images, size: clipql_sql(args, images, labels9, tmp), "a"),
        Contender("transformers pipeline", py("pipeline", labels9), "a"),
        Contender("onnxruntime-python loop", py("ort-loop", labels9), "a"),
        Contender("bare ORT session", bare("fp32"), "a"),
        Contender("clipql classify int8", cq(labels9, ["--dtype", "quantized"]), "a"),
        Contender("onnxruntime-python loop int8", py("ort-loop", labels9, ["--dtype", "quantized"]), "a"),
        Contender("bare ORT session int8", bare("quantized"), "a"),
    ]
    # The evidence for clipql's defaults (batch 16, spinning ORT threads, all
    # graph optimisations, one session using every core).
    settings = [
        *(Contender(f"clipql classify batch {k}", cq(labels9, ["--batch-size", str(k)]), "s") for k in (4, 8, 32)),
        Contender("clipql classify, sleeping threads", cq(labels9, ["--set", "clip.intra_op_spinning=false"]), "s"),
        Contender("clipql classify, basic graph optimisation",
                  cq(labels9, ["--set", "clip.graph_optimization=basic"]), "s"),
        Contender("clipql classify, 2 sessions x 1 thread",
                  cq(labels9, ["--set", "clip.sessions=2", "--set", "clip.intra_threads=1"]), "s"),
        Contender("bare ORT batch 8", bare("fp32", ["--batch", "8"]), "s"),
        Contender("bare ORT batch 32", bare("fp32", ["--batch", "32"]), "s"),
        Contender("bare ORT without spinning", bare("fp32", ["--no-spin"]), "s"),
    ]
    if not args.quick:
        a_contenders += settings
    if args.focus:
        # A closer look at a few (a) contenders with many rounds; BENCHMARKS.md
        # is left alone.
        chosen = [c for c in a_contenders + settings if re.search(args.focus, c.name)]
        if not chosen:
            sys.exit(f"--focus {args.focus!r} matches no contender")
        group = run_group("a", chosen, {c.name: a for c in chosen}, {c.name: n for c in chosen}, args.rounds)
        (work / "focus.json").write_text(json.dumps({"machine": info, "a": group}, indent=1) + "\n")
        print("| Contender | images/s (median) | best of rounds | t(3N) spread |\n|---|---|---|---|")
        for name, g in group.items():
            print(f"| {name} | {g['images_per_s']:.1f} | {best(g):.1f} | {100 * spread(g):.0f}% |")
        shutil.rmtree(tmp, ignore_errors=True)
        return
    sizes = {c.name: a for c in a_contenders}
    results["a"] = run_group("a", a_contenders, sizes, {c.name: n for c in a_contenders}, args.rounds)

    b_contenders = [
        Contender("clipql classify", cq(labels9), "b"),
        Contender("clipql classify --fast-jpeg", cq(labels9, ["--fast-jpeg"]), "b"),
        Contender("transformers pipeline", py("pipeline", labels9), "b"),
        Contender("onnxruntime-python loop", py("ort-loop", labels9), "b"),
    ]
    results["b"] = run_group("b", b_contenders, {c.name: b for c in b_contenders},
                             {c.name: args.n_phone for c in b_contenders}, args.rounds)
    results["fast_jpeg_cosine"] = cosine_fast_jpeg(args, b["n3"], tmp)

    # (c): 1,000 labels. The pipeline runs the text tower on all of them once
    # per batch it forms: once per 16 images at batch 16, once per image at
    # its default batch_size=1. It gets fewer images (its own N) to finish in
    # minutes.
    c_b16 = workload(work / "workloads", "c-pipeline", args.n_pipeline_1000, (500, 375), noise=2.0)
    c_b1 = workload(work / "workloads", "c-pipeline-1", args.n_pipeline_1000_batch1, (500, 375), noise=2.0)
    c_contenders = [
        Contender("clipql classify", cq(labels1000), "c"),
        Contender("clipql sql", lambda images, size: clipql_sql(args, images, labels1000, tmp), "c"),
        Contender("onnxruntime-python loop", py("ort-loop", labels1000), "c"),
        Contender("transformers pipeline", py("pipeline", labels1000), "c"),
        Contender("transformers pipeline, batch_size=1", py("pipeline", labels1000, ["--batch", "1"]), "c"),
    ]
    c_sizes = {c.name: a for c in c_contenders}
    c_sizes["transformers pipeline"] = c_b16
    c_sizes["transformers pipeline, batch_size=1"] = c_b1
    c_n = {c.name: n for c in c_contenders}
    c_n["transformers pipeline"] = args.n_pipeline_1000
    c_n["transformers pipeline, batch_size=1"] = args.n_pipeline_1000_batch1
    results["c"] = run_group("c", c_contenders, c_sizes, c_n, args.rounds)

    results["memory"] = memory(args, labels9, tmp)
    results["machine"]["loadavg_end"] = os.getloadavg()
    # Beside BENCHMARKS.md's data in target/bench, or beside another --out.
    default_out = Path(args.out).resolve() == (ROOT / "BENCHMARKS.md").resolve()
    data = work / "results.json" if default_out else Path(args.out).with_suffix(".json")
    data.write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(results, Path(args.out))
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {args.out} and {data}")


def write_markdown(results, out: Path):
    """Renders BENCHMARKS.md, keeping the hand-written notes below NOTES."""
    kept = ""
    if out.is_file() and NOTES in out.read_text():
        kept = NOTES + out.read_text().split(NOTES, 1)[1]
    out.write_text(render(results) + ("\n" + kept if kept else ""))


def memory(args, labels, tmp):
    """Peak RSS of clipql classify at N and 10N images, from a folder and from
    one Parquet row group holding all 10N."""
    ten = workload(Path(args.work) / "workloads", "memory", 10 * args.n // 3 + 1, (500, 375), noise=2.0)
    # `n3` holds 3 * (10N/3 + 1) >= 10N images; take exactly N and 10N.
    files = sorted(ten["n3"].glob("*.jpg"))
    out = {}
    for count in (args.n, 10 * args.n):
        d = Path(tmp) / f"mem-{count}"
        d.mkdir()
        for p in files[:count]:
            os.link(p, d / p.name)
        run = Run(clipql_classify(args, d, labels, tmp))
        out[f"folder_{count}"] = run.rss_mb
        pq = Path(tmp) / f"mem-{count}.parquet"
        Run([args.clipql, "sql", "-c",
             f"CREATE EXTERNAL TABLE i STORED AS IMAGE LOCATION '{d}/'; "
             f"COPY (SELECT path, image FROM i) TO '{pq}' STORED AS PARQUET "
             f"OPTIONS ('format.max_row_group_size' '1000000')"])
        run = Run(clipql_classify(args, pq, labels, tmp))
        out[f"parquet_{count}"] = run.rss_mb
        print(f"[memory] {count} images: folder {out[f'folder_{count}']:.0f} MB, "
              f"parquet (one row group) {out[f'parquet_{count}']:.0f} MB", flush=True)
    return out


# --------------------------------------------------------------------------
# BENCHMARKS.md

# Everything after this line in BENCHMARKS.md is written by people (what the
# numbers mean, profiles, decisions) and survives a re-run.
NOTES = "<!-- notes: everything below is kept when bench/compare.py rewrites this file -->"


def best(g):
    """Throughput from the fastest N and fastest 3N run of a contender."""
    return throughput(g["wall_n"], g["wall_3n"], g["n"], stat=min)


def spread(g):
    """(slowest - fastest) / median of a contender's 3N runs."""
    w = g["wall_3n"]
    return (max(w) - min(w)) / statistics.median(w)


def render(r):
    a, b, c = r["a"], r["b"], r["c"]
    ips = lambda g, name: g[name]["images_per_s"]  # noqa: E731
    ips_best = lambda g, name: best(g[name])  # noqa: E731
    m = r["machine"]
    spreads = [spread(g) for key in ("a", "b", "c") for g in r[key].values()]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `cargo xtask bench` (bench/compare.py); every number below comes from one run of:",
        "",
        "```",
        r["command"],
        "```",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory']} RAM, AVX2 {'yes' if m['avx2'] else 'no'}, "
        f"VNNI {'yes' if m['avx512_vnni'] else 'no'}; {m['os']}.",
        f"- Load average at start {fmt_load(m['loadavg_start'])}, at end {fmt_load(m['loadavg_end'])}.",
        f"- ONNX Runtime {m['onnxruntime']} (clipql loads the same pinned library), torch {m['torch']}, "
        f"transformers {m['transformers']}, Python {m['python']}; ClipQL commit {m['commit']}, release build.",
        f"- Model: full-size CLIP ViT-B/32 with random weights (`tests/fixtures/generate.py --full`); "
        f"speed does not depend on the weights' values.",
        f"- Every contender uses {r['threads']} threads. Throughput = (3N - N) / (median t(3N) - median t(N)) "
        f"over {r['rounds']} interleaved rounds (order rotated each round), so start-up cancels. "
        f"N = {r['n']} for (a) and (c), {r['n_phone']} for (b), {r['n_pipeline_1000']} for the pipeline on (c) "
        f"({r['n_pipeline_1000_batch1']} at batch_size=1).",
        "- Peak RSS is the contender process's `ru_maxrss` on the 3N run. First row: from process start to the "
        "first result on the N run (clipql: start-up before the job plus `--verbose`'s first-row time).",
        f"- Noise: a contender's 3N runs spread by {100 * statistics.median(spreads):.0f}% (median over contenders; "
        f"worst {100 * max(spreads):.0f}%) as (slowest - fastest) / median. Other tenants' load only ever slows a run, "
        "so each table also gives **best of rounds**: the same formula on the fastest N and fastest 3N run. "
        "Targets are judged on the medians.",
        "",
        "## Targets",
        "",
        "| Target | Measured (median) | Best of rounds | Met |",
        "|---|---|---|---|",
    ]

    def target(text, value, ok, best_value="-"):
        lines.append(f"| {text} | {value} | {best_value} | {'yes' if ok else '**no**'} |")

    def versus(g1, n1, g2, n2):
        """The median ratio and the best-of-rounds ratio of two contenders."""
        return ips(g1, n1) / ips(g2, n2), ips_best(g1, n1) / ips_best(g2, n2)

    def ratio_target(text, g1, n1, g2, n2, at_least, digits=2):
        med, top = versus(g1, n1, g2, n2)
        if at_least is None:
            lines.append(f"| {text} | {med:.{digits}f}x | {top:.{digits}f}x | - |")
        else:
            target(text, f"{med:.{digits}f}x", med >= at_least, f"{top:.{digits}f}x")

    cq = "clipql classify"
    ratio_target("`clipql classify` >= 0.9x bare ORT session (a, fp32)", a, cq, a, "bare ORT session", 0.9)
    ratio_target(">= 1.5x transformers pipeline (a)", a, cq, a, "transformers pipeline", 1.5)
    ratio_target(">= 1.05x onnxruntime-python loop (a)", a, cq, a, "onnxruntime-python loop", 1.05)
    ratio_target("`clipql sql` within 5% of `clipql classify` (a)", a, "clipql sql", a, cq, 0.95)
    ratio_target("(b) phone photos, `--fast-jpeg`: >= 3x transformers pipeline",
                 b, "clipql classify --fast-jpeg", b, "transformers pipeline", 3)
    ratio_target("(b) without `--fast-jpeg` (reported, no target)", b, cq, b, "transformers pipeline", None)
    ratio_target("(c) 1,000 labels: >= 0.85x the throughput with 9", c, cq, a, cq, 0.85)
    ratio_target("(c) >= 20x transformers pipeline (batch 16) on the same 1,000 labels",
                 c, cq, c, "transformers pipeline", 20, digits=1)
    ratio_target("(c) vs the pipeline at its default batch_size=1 (text tower per image; reported)",
                 c, cq, c, "transformers pipeline, batch_size=1", None, digits=1)
    ratio_target("int8 towers: >= 1.0x onnxruntime-python int8 loop",
                 a, "clipql classify int8", a, "onnxruntime-python loop int8", 1.0)
    ratio_target("int8 speed-up over fp32 (clipql classify; reported)", a, "clipql classify int8", a, cq, None)
    mem = r["memory"]
    n, n10 = r["n"], 10 * r["n"]
    grow = mem[f"folder_{n10}"] / mem[f"folder_{n}"]
    target(f"peak RSS at 10N ({n10}) <= 1.2x at N ({n}) images", f"{grow:.2f}x", grow <= 1.2)
    worst = max(mem.values())
    target("peak RSS < 1.5 GB, fp32 defaults, folder and one-row-group Parquet", f"{worst:.0f} MB", worst < 1536)
    cos = r["fast_jpeg_cosine"]
    lines += [
        "",
        f"`--fast-jpeg` fidelity on (b): embedding cosine with the full decode, min {cos['min']:.6f}, "
        f"median {cos['median']:.6f} over {cos['images']} images.",
        "",
    ]
    for key, title in (("a", "(a) ~500x375 JPEGs, 9 labels"), ("b", "(b) 4000x3000 JPEGs, 9 labels"),
                       ("c", "(c) ~500x375 JPEGs, 1,000 labels")):
        lines += [f"## {title}", "",
                  "| Contender | images/s | vs bare ORT | best of rounds | vs bare ORT | peak RSS | first row | "
                  "text-tower runs | t(N) median | t(3N) median | t(3N) spread |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        ceiling = r["a"]["bare ORT session"]["images_per_s"]
        ceiling_best = best(r["a"]["bare ORT session"])
        for name, g in r[key].items():
            fr = f"{g['first_row_s']:.2f} s" if g["first_row_s"] is not None else "-"
            tr = "-" if g["text_runs"] is None else str(g["text_runs"])
            lines.append(
                f"| {name} | {g['images_per_s']:.1f} | {g['images_per_s'] / ceiling:.2f}x | "
                f"{best(g):.1f} | {best(g) / ceiling_best:.2f}x | {g['rss_mb']:.0f} MB | {fr} | {tr} | "
                f"{statistics.median(g['wall_n']):.2f} s | {statistics.median(g['wall_3n']):.2f} s | "
                f"{100 * spread(g):.0f}% |")
        lines.append("")
    lines += ["## Memory", "", "| Source | N images | 10N images |", "|---|---|---|",
              f"| folder | {mem[f'folder_{n}']:.0f} MB | {mem[f'folder_{n10}']:.0f} MB |",
              f"| Parquet, one row group | {mem[f'parquet_{n}']:.0f} MB | {mem[f'parquet_{n10}']:.0f} MB |", ""]
    return "\n".join(lines) + "\n"


def fmt_load(l):
    return " / ".join(f"{x:.2f}" for x in l)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    b = sub.add_parser("bench", help="run every contender and write BENCHMARKS.md")
    b.add_argument("--clipql", required=True)
    b.add_argument("--model", type=Path, required=True)
    b.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"),
                   help="the markdown to write; its data goes to target/bench/results.json for BENCHMARKS.md, "
                        "else beside it as .json")
    b.add_argument("--work", default=str(ROOT / "target" / "bench"))
    b.add_argument("--n", type=int, default=32, help="N for workloads (a) and (c): each contender runs N and 3N images")
    b.add_argument("--n-phone", type=int, default=16, help="N for workload (b), 4000x3000 JPEGs")
    b.add_argument("--n-pipeline-1000", type=int, default=16, help="N for the pipeline (batch 16) on 1,000 labels")
    b.add_argument("--n-pipeline-1000-batch1", type=int, default=2, help="N for the pipeline at batch_size=1 on 1,000 labels")
    b.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are over these")
    b.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for the Python contenders (clipql uses every core)")
    b.add_argument("--quick", action="store_true", help="skip the settings sweep")
    b.add_argument("--focus", metavar="REGEX",
                   help="run only the workload (a) contenders whose name matches, print a table and write "
                        "target/bench/focus.json instead of BENCHMARKS.md (use with more --rounds)")
    b.add_argument("--command", default="cargo xtask bench", help="how this run was started, for BENCHMARKS.md")
    rd = sub.add_parser("render", help="rewrite BENCHMARKS.md from a results.json (no runs)")
    rd.add_argument("--results", type=Path, default=ROOT / "target" / "bench" / "results.json")
    rd.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    mk = sub.add_parser("make-images", help="(internal) generate one workload folder")
    mk.add_argument("out", type=Path)
    mk.add_argument("count", type=int)
    mk.add_argument("width", type=int)
    mk.add_argument("height", type=int)
    mk.add_argument("seed", type=int)
    mk.add_argument("noise", type=float)
    c = sub.add_parser("contender", help="(internal) one contender in its own process")
    c.add_argument("kind", choices=["pipeline", "ort-loop", "bare-ort"])
    c.add_argument("--model", type=Path, required=True)
    c.add_argument("--images", type=Path, required=True)
    c.add_argument("--labels", type=Path, required=True)
    c.add_argument("--threads", type=int, required=True)
    c.add_argument("--dtype", default="fp32", choices=["fp32", "quantized"])
    c.add_argument("--count", type=int, default=0)
    c.add_argument("--batch", type=int, default=BATCH)
    c.add_argument("--opt", default="all", choices=["basic", "all"])
    c.add_argument("--no-spin", action="store_true", help="intra-op threads sleep when idle (ORT spins by default)")
    args = p.parse_args()
    if args.what == "bench":
        bench(args)
    elif args.what == "render":
        write_markdown(json.loads(args.results.read_text()), args.out)
        print(f"wrote {args.out} from {args.results}")
    elif args.what == "make-images":
        make_images(args.out, args.count, (args.width, args.height), args.seed, args.noise)
    else:
        run = {"pipeline": contender_pipeline, "ort-loop": contender_ort_loop, "bare-ort": contender_bare_ort}
        print(json.dumps(run[args.kind](args)), flush=True)


if __name__ == "__main__":
    main()
