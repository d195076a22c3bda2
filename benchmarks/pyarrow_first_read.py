"""Where pyarrow's first Parquet read goes: each variant in a fresh process (imports included),
medians of alternating runs. Usage: python benchmarks/pyarrow_first_read.py FILE.parquet [REPS]
(a file with float columns "pred" and "target", e.g. the 20M-row file of benchmarks/peers.py).

Measured 2026-11-29 on the 20M-row file under a load of ~10 on 2 cores (seconds): import numpy +
pyarrow.parquet 1.67; read_table 6.20, and a second read_table in the same process 1.00; memory_map
6.16; pre_buffer=False 6.16; use_threads=False 7.71; system pool 7.13; jemalloc pool 7.70;
set_cpu_count(2) 7.24; ParquetFile.iter_batches(1M) 2.68 (memory-mapped 2.42, no threads 3.80).
The first read_table carries a one-off cost that iter_batches (lossctl's path) does not."""
import statistics, subprocess, sys, time
path = sys.argv[1]
V = {
 "import numpy+pyarrow.parquet": "import numpy, pyarrow.parquet as pq",
 "read_table (default)": "import pyarrow.parquet as pq; t=pq.read_table(P, columns=['pred','target'])",
 "read_table x2 (2nd timed)": "import pyarrow.parquet as pq; pq.read_table(P, columns=['pred','target']); import time; a=time.perf_counter(); pq.read_table(P, columns=['pred','target']); print('second', time.perf_counter()-a, file=sys.stderr)",
 "memory_map=True": "import pyarrow.parquet as pq; t=pq.read_table(P, columns=['pred','target'], memory_map=True)",
 "use_threads=False": "import pyarrow.parquet as pq; t=pq.read_table(P, columns=['pred','target'], use_threads=False)",
 "pre_buffer=False": "import pyarrow.parquet as pq; t=pq.read_table(P, columns=['pred','target'], pre_buffer=False)",
 "system pool": "import pyarrow as pa; pa.set_memory_pool(pa.system_memory_pool()); import pyarrow.parquet as pq; t=pq.read_table(P, columns=['pred','target'])",
 "jemalloc pool": "import pyarrow as pa; pa.set_memory_pool(pa.jemalloc_memory_pool()); import pyarrow.parquet as pq; t=pq.read_table(P, columns=['pred','target'])",
 "set_cpu_count(2)": "import pyarrow as pa; pa.set_cpu_count(2); import pyarrow.parquet as pq; t=pq.read_table(P, columns=['pred','target'])",
 "iter_batches 1M": "import pyarrow.parquet as pq; f=pq.ParquetFile(P); [b for b in f.iter_batches(batch_size=1<<20, columns=['pred','target'])]",
 "iter_batches 1M mmap": "import pyarrow.parquet as pq; f=pq.ParquetFile(P, memory_map=True); [b for b in f.iter_batches(batch_size=1<<20, columns=['pred','target'])]",
 "iter_batches 1M no-threads": "import pyarrow.parquet as pq; f=pq.ParquetFile(P); [b for b in f.iter_batches(batch_size=1<<20, columns=['pred','target'], use_threads=False)]",
}
res = {k: [] for k in V}
names = list(V)
for i in range(int(sys.argv[2]) if len(sys.argv) > 2 else 3):
    for k in names[i % len(names):] + names[:i % len(names)]:
        a = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", f"import sys; P={path!r}; " + V[k]], capture_output=True, text=True)
        res[k].append(time.perf_counter() - a)
        if r.returncode: print(k, r.stderr[-500:])
        if "second" in r.stderr: res.setdefault("  (2nd read alone)", []).append(float(r.stderr.split()[-1]))
py = statistics.median(res[names[0]])
for k, v in res.items():
    print(f"{k:<32}{statistics.median(v):8.3f} s")
