"""`make bench`: rifle against PyTorch eager on this machine, in one interleaved run.

Every figure comes from runs that alternate rifle, PyTorch, rifle, PyTorch... (--pairs of each), each in its
own process, and is quoted as a median with the rust/python ratio of each pair, because shared machines
are noisy. Peak RSS is each process's own (wait4's ru_maxrss). Next to each figure: the 1-minute load
average over its runs and the other processes that were busy when it started.

Prints Markdown tables and writes them to --out; BENCHMARKS.md holds a copy with the analysis.
Standard library only; the PyTorch side runs in --python (the bench venv).
"""
import argparse
import json
import math
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PIPELINES = os.path.join(HERE, "pipelines")


def measure(cmd):
    """Runs one process to completion; returns (its JSON line, its peak RSS in MiB)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = b"", b""
    streams = {proc.stdout.fileno(): "out", proc.stderr.fileno(): "err"}
    while streams:
        ready, _, _ = select.select(list(streams), [], [])
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                del streams[fd]
            elif streams[fd] == "out":
                out += chunk
            else:
                err += chunk
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed ({code}):\n{err.decode(errors='replace')[-3000:]}")
    lines = [l for l in out.decode().splitlines() if l.startswith("{")]
    if not lines:
        sys.exit(f"bench: {' '.join(cmd)} printed no result:\n{err.decode(errors='replace')[-3000:]}")
    return json.loads(lines[-1]), usage.ru_maxrss / 1024


def loadavg():
    return float(open("/proc/loadavg").read().split()[0])


def busy_processes(exclude=(), seconds=1.0, threshold=10.0):
    """Other processes using more than `threshold` % of a core over `seconds`, as 'name (NN%)'."""
    def sample():
        ticks = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = open(f"/proc/{pid}/stat").read()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            ticks[int(pid)] = (name, int(fields[11]) + int(fields[12]))
        return ticks

    before = sample()
    time.sleep(seconds)
    after = sample()
    hz = os.sysconf("SC_CLK_TCK")
    busy = []
    for pid, (name, t) in after.items():
        if pid in exclude or pid == os.getpid() or pid not in before:
            continue
        pct = 100.0 * (t - before[pid][1]) / hz / seconds
        if pct >= threshold:
            busy.append((pct, name))
    return ", ".join(f"{name} ({pct:.0f}%)" for pct, name in sorted(busy, reverse=True)) or "none"


class Context:
    """What each figure is recorded with."""

    def __init__(self):
        self.loads = []
        self.busy = busy_processes()

    def sample(self):
        self.loads.append(loadavg())

    def load(self):
        return f"{min(self.loads):.1f}–{max(self.loads):.1f}" if self.loads else "-"


def median(xs):
    return statistics.median(xs)


def fmt_ratios(ratios):
    return " ".join(f"{r:.2f}" for r in ratios)


def interleave(pairs, rust_cmd, python_cmd, ctx):
    """Runs rust, python, rust, python...; returns the two lists of (result, rss)."""
    rust, python = [], []
    for _ in range(pairs):
        ctx.sample()
        rust.append(measure(rust_cmd))
        ctx.sample()
        python.append(measure(python_cmd))
    ctx.sample()
    return rust, python


def training(args, notes):
    rows = [
        "| model @ px | steps (warm-up + timed) | rifle img/s | PyTorch img/s | rifle/PyTorch per pair | ratio (median) | rifle peak RSS | PyTorch peak RSS | load avg 1 min | other busy processes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    results = {}
    for arch, size, warmup, steps in args.train_configs:
        ctx = Context()
        rust_cmd = [args.rifle, "bench", os.path.join(PIPELINES, "train.yaml"), "--what", "train",
                    "--warmup", str(warmup), "--steps", str(steps), "--set", f"backbone.resnet.arch={arch}",
                    "--set", f"dataset.mock.size={size}", "--set", f"threads={args.threads}"]
        python_cmd = [args.python, os.path.join(HERE, "reference.py"), "train", "--arch", arch, "--size", str(size),
                      "--warmup", str(warmup), "--steps", str(steps), "--threads", str(args.threads)]
        rust, python = interleave(args.pairs, rust_cmd, python_cmd, ctx)
        ratios = [r["images_per_s"] / p["images_per_s"] for (r, _), (p, _) in zip(rust, python)]
        r_ips, p_ips = median([r["images_per_s"] for r, _ in rust]), median([p["images_per_s"] for p, _ in python])
        r_rss, p_rss = median([m for _, m in rust]), median([m for _, m in python])
        results[(arch, size)] = r_ips
        rows.append(f"| {arch} @ {size} | {warmup} + {steps} | {r_ips:.2f} | {p_ips:.2f} | {fmt_ratios(ratios)} | "
                    f"**{median(ratios):.2f}** | {r_rss:.0f} MiB | {p_rss:.0f} MiB | {ctx.load()} | {ctx.busy} |")
    notes.append("\n".join(rows))
    return results


def overhead(args, notes):
    arch, size, warmup, steps = args.overhead_config
    # RIFLE needs K+1 = 4 epochs; 4 steps per epoch puts its 3 re-initialisations inside the timed steps.
    epochs = math.ceil((warmup + steps) / 4)
    ctx = Context()
    common = ["--what", "train", "--warmup", str(warmup), "--steps", str(steps), "--set", f"backbone.resnet.arch={arch}",
              "--set", f"dataset.mock.size={size}", "--set", f"threads={args.threads}", "--set", f"epochs={epochs}"]
    plain_cmd = [args.rifle, "bench", os.path.join(PIPELINES, "train.yaml")] + common
    plugin_cmd = [args.rifle, "bench", os.path.join(PIPELINES, "train-plugins.yaml")] + common
    plain, plugins = interleave(args.pairs, plain_cmd, plugin_cmd, ctx)
    step = lambda r: median(r["seconds"])
    pcts = [100.0 * (step(q) / step(p) - 1) for (p, _), (q, _) in zip(plain, plugins)]
    notes.append("\n".join([
        "| model @ px | steps (warm-up + timed) | plain step (median) | L2-SP + RIFLE + grad_norm step (median) | overhead per pair | overhead (median) | load avg 1 min | other busy processes |",
        "|---|---|---|---|---|---|---|---|",
        f"| {arch} @ {size} | {warmup} + {steps} | {median([step(p) for p, _ in plain]):.3f} s | "
        f"{median([step(q) for q, _ in plugins]):.3f} s | {' '.join(f'{x:+.1f}%' for x in pcts)} | **{median(pcts):+.1f}%** | "
        f"{ctx.load()} | {ctx.busy} |",
    ]))


def loader(args, notes, training_ips):
    folder = os.path.join(args.cache, "bench", "jpegs")
    if not os.path.isdir(os.path.join(folder, "test")):
        for split, count in (("train", 512), ("test", 8)):
            measure([args.python, os.path.join(HERE, "reference.py"), "jpegs", os.path.join(folder + ".tmp", split),
                     "--count", str(count)])
        os.rename(folder + ".tmp", folder)
    rows = [
        "| transforms | batches (warm-up + timed) | rifle img/s | PyTorch img/s | rifle/PyTorch per pair | ratio (median) | rifle loader / rifle training | load avg 1 min | other busy processes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for resize, crop, consumer in args.loader_configs:
        ctx = Context()
        warmup, steps = args.loader_batches
        rust_cmd = [args.rifle, "bench", os.path.join(PIPELINES, "loader.yaml"), "--what", "loader", "--warmup", str(warmup),
                    "--steps", str(steps), "--set", f"dataset.image_folder.train={folder}/train",
                    "--set", f"dataset.image_folder.test={folder}/test", "--set", f"augment.train[0].resize.shorter={resize}",
                    "--set", f"augment.train[1].random_crop.size={crop}", "--set", f"data.workers={args.workers}"]
        python_cmd = [args.python, os.path.join(HERE, "reference.py"), "loader", f"{folder}/train", "--resize", str(resize),
                      "--crop", str(crop), "--warmup", str(warmup), "--steps", str(steps), "--workers", str(args.workers)]
        rust, python = interleave(args.pairs, rust_cmd, python_cmd, ctx)
        ratios = [r["images_per_s"] / p["images_per_s"] for (r, _), (p, _) in zip(rust, python)]
        r_ips = median([r["images_per_s"] for r, _ in rust])
        train = training_ips.get(consumer)
        versus = f"{r_ips / train:.1f}× ({consumer[0]} @ {consumer[1]})" if train else "-"
        rows.append(f"| resize {resize}, crop {crop}, flip, normalise; {args.workers} workers | {warmup} + {steps} | {r_ips:.0f} | "
                    f"{median([p['images_per_s'] for p, _ in python]):.0f} | {fmt_ratios(ratios)} | **{median(ratios):.2f}** | "
                    f"{versus} | {ctx.load()} | {ctx.busy} |")
    notes.append("\n".join(rows))


def startup(args, notes):
    weights = os.path.join(args.cache, "bench", "resnet50.pth")
    if not os.path.exists(weights):
        os.makedirs(os.path.dirname(weights), exist_ok=True)
        measure([args.python, os.path.join(HERE, "reference.py"), "weights", weights + ".tmp", "--arch", "resnet50"])
        os.rename(weights + ".tmp", weights)
    ctx = Context()
    rows = []
    for _ in range(args.pairs):
        ctx.sample()
        rows.append(first_step(args, weights))
    ctx.sample()
    med = lambda k: median([r[k] for r in rows])
    notes.append("\n".join([
        "| run | process start → weights loaded | weights loading | process start → first step begins | of which not weights loading | first step itself | load avg 1 min | other busy processes |",
        "|---|---|---|---|---|---|---|---|",
        f"| `rifle run bench/pipelines/startup.yaml` (ResNet-50 @ 224, 98 MB .pth), median of {len(rows)} | "
        f"{med('weights_done'):.2f} s | {med('weights'):.2f} s | {med('first_step'):.2f} s | **{med('first_step') - med('weights'):.2f} s** | "
        f"{med('step'):.2f} s | {ctx.load()} | {ctx.busy} |",
    ]))


def first_step(args, weights):
    """One `rifle run`, timed from spawn by its log lines; stopped once its first step is done."""
    out = tempfile.mkdtemp(prefix="rifle-bench-startup-")
    cmd = [args.rifle, "run", os.path.join(PIPELINES, "startup.yaml"), "--set", f"weights.path={weights}",
           "--set", f"threads={args.threads}", "--out", os.path.join(out, "run")]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    got, log = {}, []
    try:
        for line in proc.stderr:
            now = time.perf_counter() - start
            log.append(line)
            if "weights: loaded" in line:
                got["weights_done"] = now
                got["weights"] = float(line.rsplit(" in ", 1)[1].rstrip("s\n"))
            if "first step done" in line:
                got["step"] = float(line.rsplit("the step took ", 1)[1].rstrip("s\n"))
                got["first_step"] = now - got["step"]
                break
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(out, ignore_errors=True)
    if len(got) != 4:
        sys.exit("bench: `rifle run` did not log its weights and first step:\n" + "".join(log[-20:]))
    return got


def gpu(args, notes):
    """On a GPU: the mock pipeline trains on CUDA, then ResNet-50 @ 224 batch 32 training img/s for each
    precision and memory layout, rifle and PyTorch interleaved. Variants rifle lacks are PyTorch-only rows."""
    out = tempfile.mkdtemp(prefix="rifle-gpu-mock-")
    run_dir = os.path.join(out, "run")
    mock = subprocess.run([args.rifle, "run", os.path.join(os.path.dirname(HERE), "pipelines", "mock.yaml"),
                           "--set", f"device={args.device}", "--out", run_dir], capture_output=True, text=True)
    if mock.returncode != 0:
        sys.exit(f"bench: the mock pipeline failed on {args.device}:\n{mock.stderr[-3000:]}")
    tests = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")) if '"split":"test"' in l.replace(" ", "")]
    device_line = next((l for l in mock.stderr.splitlines() if "device" in l.lower()), "?")
    shutil.rmtree(out, ignore_errors=True)
    top1 = ", ".join("%.1f%%" % (100 * t["top1"]) for t in tests)
    notes.append(f"Mock pipeline on `{args.device}`: test top-1 per epoch {top1}; rifle's log: `{device_line.strip()}`")
    arch, size, warmup, steps = args.gpu_config
    rows = [
        "| variant | steps (warm-up + timed) | rifle img/s | PyTorch img/s | rifle/PyTorch per pair | ratio (median) | load avg 1 min |",
        "|---|---|---|---|---|---|---|",
    ]
    # (label, rifle's overrides or None where rifle has no such mode, PyTorch's flags)
    variants = [
        ("fp32", [], []),
        ("autocast fp16 (loss scaling)", ["--set", "amp=fp16"], ["--amp", "fp16"]),
        ("autocast bf16", ["--set", "amp=bf16"], ["--amp", "bf16"]),
        ("fp32, channels-last", None, ["--channels-last"]),
    ]
    for label, rifle_flags, python_flags in variants:
        ctx = Context()
        python_cmd = [args.python, os.path.join(HERE, "reference.py"), "train", "--arch", arch, "--size", str(size),
                      "--warmup", str(warmup), "--steps", str(steps), "--device", args.device] + python_flags
        if rifle_flags is None:
            python = []
            for _ in range(args.pairs):
                ctx.sample()
                python.append(measure(python_cmd))
            ctx.sample()
            rows.append(f"| {label} | {warmup} + {steps} | not in rifle | {median([p['images_per_s'] for p, _ in python]):.1f} | - | - | {ctx.load()} |")
            continue
        rust_cmd = [args.rifle, "bench", os.path.join(PIPELINES, "train.yaml"), "--what", "train", "--warmup", str(warmup),
                    "--steps", str(steps), "--set", f"backbone.resnet.arch={arch}", "--set", f"dataset.mock.size={size}",
                    "--set", f"device={args.device}", "--set", f"epochs={math.ceil((warmup + steps) / 4) + 1}"] + rifle_flags
        rust, python = interleave(args.pairs, rust_cmd, python_cmd, ctx)
        ratios = [r["images_per_s"] / p["images_per_s"] for (r, _), (p, _) in zip(rust, python)]
        rows.append(f"| {label} | {warmup} + {steps} | {median([r['images_per_s'] for r, _ in rust]):.1f} | "
                    f"{median([p['images_per_s'] for p, _ in python]):.1f} | {fmt_ratios(ratios)} | **{median(ratios):.2f}** | {ctx.load()} |")
    notes.append("\n".join(rows))


def machine():
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0) / 2**20
    return f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rifle", required=True)
    parser.add_argument("--python", required=True, help="the bench venv's python")
    parser.add_argument("--cache", default=os.environ.get("RIFLE_CACHE", os.path.expanduser("~/.cache/rifle")))
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cuda: the GPU section (--only gpu)")
    parser.add_argument("--out", required=True, help="where the Markdown tables are written")
    parser.add_argument("--only", nargs="*", default=["train", "overhead", "loader", "startup"])
    parser.add_argument("--quick", action="store_true", help="tiny step counts: checks the runner, measures nothing")
    args = parser.parse_args()
    # Steps per configuration: ResNet-50 @ 224 takes seconds per step on 2 cores, so it gets the fewest.
    # ResNet-50 @ 224, batch 32 on the GPU; --quick shrinks it for a dry run of the GPU section on the CPU.
    args.gpu_config = ("resnet18", 32, 1, 2) if args.quick else ("resnet50", 224, 5, 30)
    if args.quick:
        args.train_configs = [("resnet18", 112, 1, 2)]
        args.overhead_config = ("resnet18", 112, 1, 15)
        args.loader_configs = [(128, 112, ("resnet18", 112))]
        args.loader_batches = (2, 8)
    else:
        args.train_configs = [("resnet18", 112, 2, 10), ("resnet50", 112, 2, 6), ("resnet50", 224, 1, 4)]
        args.overhead_config = ("resnet18", 112, 2, 14)
        args.loader_configs = [(128, 112, ("resnet18", 112)), (240, 224, ("resnet50", 224))]
        args.loader_batches = (4, 32)
    commit = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    header = (f"Run {time.strftime('%Y-%m-%d %H:%M')} on {machine()}, commit {commit or '?'}; "
              f"{args.pairs} interleaved pairs per figure, {args.threads} libtorch threads on both sides.")
    sections = [header]
    started = time.perf_counter()
    training_ips = {}
    if "train" in args.only:
        sections.append("### Training throughput (CPU, fp32, batch 32, SGD momentum 0.9, 100 classes)")
        training_ips = training(args, sections)
    if "overhead" in args.only:
        sections.append("### Plugin overhead (rifle alone: the same step with and without the paper's method)")
        overhead(args, sections)
    if "loader" in args.only:
        sections.append("### Data loader alone (JPEG decode + resize + random crop + flip + normalise + collate, batch 32)")
        loader(args, sections, training_ips)
    if "gpu" in args.only:
        arch, size = args.gpu_config[:2]
        sections.append(f"### GPU check (`{args.device}`): {arch} @ {size}, batch 32, SGD momentum 0.9, 100 classes")
        gpu(args, sections)
    if "startup" in args.only:
        sections.append("### Start-up: `rifle run` to its first optimizer step")
        startup(args, sections)
    sections.append(f"(whole run: {time.perf_counter() - started:.0f} s)")
    text = "\n\n".join(sections) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
