"""Shared bench helpers: medians, peak RSS of every process, model dirs for speed runs, output."""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO))


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_gflops(n: int = 2048, repeats: int = 10, dtype: str = "float32") -> float:
    """This machine's matmul rate with all cores (fp32 by default): the physical limit the encoder is
    held to."""
    import torch

    torch.set_num_threads(os.cpu_count())
    a, b = torch.randn(n, n, dtype=getattr(torch, dtype)), torch.randn(n, n, dtype=getattr(torch, dtype))
    return 2 * n**3 / median_time(lambda: a @ b, repeats=repeats, warmup=2) / 1e9


class PeakRSS:
    """Samples the memory of this process and all its descendants (an embedded Ray's GCS, raylet and
    workers are children of the driver) in a background thread.

    `peak`: the summed RSS, which counts every shared page (torch's libraries mapped by each worker,
    the object store's shared memory) once per process that maps it. `peak_pss`: the summed PSS, which
    splits each shared page among the processes that map it, so the sum is the memory really used."""

    def __init__(self, interval: float = 0.2):
        import psutil

        self._me = psutil.Process()
        self._psutil = psutil
        self.interval = interval
        self.peak = 0
        self.peak_pss = 0
        self.breakdown: list[dict] = []  # per process, at the peak of the PSS sum
        self._stop = threading.Event()

    def _sample(self) -> None:
        procs = []
        for p in [self._me, *self._me.children(recursive=True)]:
            try:
                info = p.memory_full_info()
                name = " ".join(p.cmdline()[:1])[:60] or p.name()
            except self._psutil.Error:
                continue
            procs.append({"process": name, "rss_gb": info.rss / 1e9,
                          "pss_gb": getattr(info, "pss", info.rss) / 1e9})  # PSS is Linux-only
        rss = sum(p["rss_gb"] for p in procs) * 1e9
        pss = sum(p["pss_gb"] for p in procs) * 1e9
        self.peak = max(self.peak, rss)
        if pss > self.peak_pss:
            self.peak_pss = pss
            self.breakdown = sorted(procs, key=lambda p: -p["pss_gb"])

    def __enter__(self) -> "PeakRSS":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def untrained_model_dir(vocab_texts, folder: Path | None = None, **model_overrides) -> Path:
    """A model dir with the default architecture and random weights: speed does not depend on training."""
    from vecjob.config import ModelConfig, TokenizerConfig
    from vecjob.model_dir import MANIFEST_KIND, write_model_dir
    from vecjob.parquet_io import new_manifest
    from vecjob.tokenizer import Vocab, count_tokens
    from vecjob.training import build_model

    tok_cfg = TokenizerConfig()
    model_cfg = ModelConfig(**model_overrides)
    vocab = Vocab.from_counts(count_tokens(vocab_texts), tok_cfg.max_vocab, tok_cfg.min_count)
    model = build_model(model_cfg, len(vocab), seed=0)
    folder = folder or Path(tempfile.mkdtemp(prefix="vecjob-bench-")) / "model"
    write_model_dir(folder, model_cfg, tok_cfg, vocab, model.state_dict(),
                    new_manifest(MANIFEST_KIND, note="untrained, for speed benchmarks"), plot_history=False)
    return folder


def print_table(title: str, rows: list[dict], columns: list[str]) -> None:
    print(f"\n{title}")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def machine() -> dict:
    """What ran a benchmark. Training runs of the same code and seed are bit-identical on one machine,
    not across CPU models (their float kernels differ), so every result file records the CPU.
    Versions are those of libraries the script imported: importing one here would change what a
    memory benchmark (scale.py's torch-free driver) stands for."""
    import platform

    cpu, flags = platform.processor(), set()
    try:
        with open("/proc/cpuinfo") as info:
            lines = info.read().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = set(next(line.split(":", 1)[1].split() for line in lines if line.startswith("flags")))
    except (OSError, StopIteration):
        pass
    versions = {name: sys.modules[name].__version__
                for name in ("torch", "numpy", "polars", "sklearn") if name in sys.modules}
    # "AMD EPYC" names several generations: the vector instructions tell them apart, and decide whether
    # the encoder's `auto` precision is bf16 (AVX512-BF16 or AMX) and whether bf16 runs at all (AVX-512).
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return {"cpu": cpu, "cpus": os.cpu_count(), **({"simd": simd} if flags else {}), **versions}


def seeds(listed: str) -> list[int]:
    """A flag's comma-separated seeds ("0,1,2"; "" for none)."""
    return [int(s) for s in listed.split(",") if s]


class RowsFile:
    """An experiment's result file, rewritten as each row is measured, so a run stopped part-way keeps
    every row it finished; `data` holds the file's other keys."""

    def __init__(self, out: str | Path, **meta):
        self.out = Path(out)
        self.data = {**meta, "rows": [], "command": " ".join(sys.argv), "machine": machine()}

    @property
    def rows(self) -> list[dict]:
        return self.data["rows"]

    def add(self, row: dict) -> dict:
        self.rows.append(row)
        print(json.dumps(row, default=float), flush=True)
        self.write()
        return row

    def write(self) -> None:
        self.out.write_text(json.dumps(self.data, indent=2, default=float))


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    payload = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine(),
               "when": time.strftime("%Y-%m-%d %H:%M"), **payload}
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    print(f"\nwrote {path}")
    return path
