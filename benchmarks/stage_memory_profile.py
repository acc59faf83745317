"""Where a stage's memory peaks: run it in this process (as `python pipelines/<stage>.py`
does) while a thread samples the RSS and the main thread's stack every 0.1 s, then print the
peak, the highest RSS seen in each place, and a timeline.

    cd <project> && python <repo>/benchmarks/stage_memory_profile.py evaluate --params params.yaml

The benchmark's projects (`pipeline_scale.py --keep DIR`) are the usual <project>.
"""
import collections
import importlib
import os
import sys
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from seqmodels.stages.runner import run_stage

stage = sys.argv[1]
samples = []
main = threading.main_thread().ident
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
stop = False
def sample():
    while not stop:
        frame = sys._current_frames().get(main)
        stack = traceback.extract_stack(frame)
        where = " > ".join(f"{os.path.basename(s.filename)}:{s.name}:{s.lineno}" for s in stack
                           if any(name in s.filename for name in ("seqmodels", "sklearn", "numpy")))[-400:]
        samples.append((time.time(), rss(), where))
        time.sleep(0.1)
t = threading.Thread(target=sample, daemon=True)
t.start()
mod = importlib.import_module(f"seqmodels.stages.{stage}")
t0 = time.time()
rc = run_stage(stage, mod.run, sys.argv[2:])
stop = True
print("rc", rc, "seconds", round(time.time() - t0, 1))
peak = max(samples, key=lambda s: s[1])
print("peak", peak[1], "MiB at", round(peak[0] - t0, 1), peak[2])
# per coarse phase: max rss by innermost seqmodels function
phase = collections.OrderedDict()
for _ts, r, where in samples:
    key = " > ".join(where.split(" > ")[-3:])
    phase[key] = max(phase.get(key, 0), r)
for k, v in sorted(phase.items(), key=lambda kv: -kv[1])[:25]:
    print(v, k)
print("--- timeline")
last = -10
for ts, r, where in samples:
    if ts - last >= 1.0:
        last = ts
        print(round(ts - t0, 1), r, " > ".join(where.split(" > ")[-2:]))
