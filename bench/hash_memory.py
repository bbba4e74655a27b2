"""What argon2id's working buffer costs a worker: CPU per hash and resident memory once idle,
under the allocator settings `cloudmfa serve` gives its workers and the ones it used before.

    .venv/bin/python bench/hash_memory.py [--hashes 40] [--rounds 5]

Each round runs one child process per setting, interleaved; a child verifies a password
`--hashes` times through the service's hashing pool (one thread, as a worker of
`serve --workers 2` has) with the service's default parameters, back to back, and reports the
hashing thread's CPU time per hash (its own user + system time, so other load on the machine
disturbs it little, though not at all only on a quiet machine), its page faults per hash, and
its resident memory after the pool's idle trim.

- "one arena, trim when idle": what serve does now (cli/serve.py ONE_MALLOC_ARENA; the pool's
  idle trim in security/passwords.py): the freed buffer is reused by the next hash.
- "a fresh mapping per hash": what serve did before: glibc's mmap threshold fixed below the
  buffer's size, with transparent huge pages on the mappings, so each buffer is mapped, faulted
  in and unmapped once per hash.
- "glibc defaults": the buffer is reused and, in the hashing thread's own arena, never handed
  back (the trim reaches only the main arena).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import asyncio, json, resource, sys, time
from cloudmfa.config import Settings
from cloudmfa.security.passwords import PasswordHashing

def rss_mib():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmRSS")) / 1024

def thread_usage():
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return time.thread_time(), usage.ru_minflt

async def main():
    s = Settings(_env_file=None)
    h = PasswordHashing(time_cost=s.argon2_time_cost, memory_kib=s.argon2_memory_kib,
                        parallelism=s.argon2_parallelism, threads=1, idle_trim_s=0.05)
    stored = await h.hash("plum-orbit-velvet-canyon-42")
    await h.verify(stored, "plum-orbit-velvet-canyon-42")  # the buffer's first use, untimed
    n = int(sys.argv[1])
    start = await asyncio.wrap_future(h._pool.submit(thread_usage))
    for _ in range(n):
        await h.verify(stored, "plum-orbit-velvet-canyon-42")
    end = await asyncio.wrap_future(h._pool.submit(thread_usage))
    await asyncio.sleep(0.3)  # past the idle trim
    await asyncio.wrap_future(h._pool.submit(lambda: None))
    print(json.dumps({
        "cpu_ms_per_hash": (end[0] - start[0]) * 1000 / n,
        "faults_per_hash": (end[1] - start[1]) / n,
        "rss_mib": rss_mib(),
    }))

asyncio.run(main())
"""

VARIANTS = {
    "one arena, trim when idle": "glibc.malloc.arena_max=1",
    "a fresh mapping per hash": "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=4194304",
    "glibc defaults": None,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hashes", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, tunables in VARIANTS.items():
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
        faults = max(r["faults_per_hash"] for r in runs)
        rss = max(r["rss_mib"] for r in runs)
        print(
            f"{name:26}  CPU per hash (ms), rounds: {', '.join(f'{c:.1f}' for c in cpu)}"
            f"  median {cpu[len(cpu) // 2]:.1f}  faults/hash {faults:.0f}"
            f"  RSS once idle: {rss:.1f} MiB"
        )


if __name__ == "__main__":
    main()
