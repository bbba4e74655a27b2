"""What argon2id's working buffer costs a worker, with and without the allocator settings that
`cloudmfa serve` gives its workers (cli/serve.py, HASH_MEMORY_TUNABLES).

    .venv/bin/python bench/hash_memory.py [--hashes 20] [--rounds 3]

Each round runs one child process per setting, interleaved; a child verifies a password
`--hashes` times on one thread (as a worker's hashing thread does) with the service's default
parameters and reports the CPU time per hash (the thread's own user + system time, so other
load on the machine disturbs it little) and its resident memory afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, threading, time
from cloudmfa.config import Settings
from cloudmfa.security.passwords import PasswordHashing

s = Settings(_env_file=None)
h = PasswordHashing(time_cost=s.argon2_time_cost, memory_kib=s.argon2_memory_kib,
                    parallelism=s.argon2_parallelism)
stored = h.hash_sync("plum-orbit-velvet-canyon-42")
out = {}

def work():
    start = time.thread_time()
    for _ in range(int(sys.argv[1])):
        h.verify_sync(stored, "plum-orbit-velvet-canyon-42")
    out["cpu_ms_per_hash"] = (time.thread_time() - start) * 1000 / int(sys.argv[1])

t = threading.Thread(target=work)
t.start()
t.join()
with open("/proc/self/status") as status:
    rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
out["rss_mib"] = rss / 1024
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hashes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from cloudmfa.cli.serve import HASH_MEMORY_TUNABLES

    variants = {"glibc defaults": None, "serve's workers": HASH_MEMORY_TUNABLES}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, tunables in variants.items():
            env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
            if tunables:
                env["GLIBC_TUNABLES"] = tunables
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(args.hashes)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            results[name].append(json.loads(done.stdout))
    for name, runs in results.items():
        cpu = sorted(r["cpu_ms_per_hash"] for r in runs)
        rss = max(r["rss_mib"] for r in runs)
        print(
            f"{name:16}  CPU per hash (ms), rounds: {', '.join(f'{c:.1f}' for c in cpu)}"
            f"  median {cpu[len(cpu) // 2]:.1f}   RSS after: {rss:.1f} MiB"
        )


if __name__ == "__main__":
    main()
