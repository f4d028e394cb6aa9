#!/usr/bin/env python3
"""Hand-off with many waiters, for one lock spec: a holder, N waiters queued
behind it, then the time from the holder's exit to the first waiter's
command, and until all N have run.

    cargo bench --bench compare --no-run   # builds the stamp helper
    scripts/handoff_many.py target/release/lockwrap 'redis://127.0.0.1:6379#x' 50 5

The waiters' command is the benchmark's own helper (`--helper stamp`, which
prints CLOCK_MONOTONIC in ns), so times compare across processes.
"""
import glob
import os
import statistics
import subprocess
import sys
import time


def main():
    lockwrap, spec, waiters = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    helpers = [p for p in glob.glob("target/release/deps/compare-*") if os.access(p, os.X_OK) and not p.endswith(".d")]
    if not helpers:
        sys.exit("no target/release/deps/compare-*: run `cargo bench --bench compare --no-run` first")
    helper = max(helpers, key=os.path.getmtime)
    firsts, alls = [], []
    for _ in range(rounds):
        holder = subprocess.Popen([lockwrap, spec, helper, "--helper", "hold"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert holder.stdout.read(1) == b"H", "the holder did not start"
        queue = [subprocess.Popen([lockwrap, spec, helper, "--helper", "stamp"],
                                  stdout=subprocess.PIPE) for _ in range(waiters)]
        # Let every waiter start and block; not part of the measurement.
        time.sleep(0.5 + 0.005 * waiters)
        released = time.monotonic_ns()
        holder.stdin.close()
        holder.wait()
        stamps = sorted(int(w.communicate()[0]) for w in queue)
        firsts.append((stamps[0] - released) / 1e3)
        alls.append((stamps[-1] - released) / 1e6)
    print(f"{spec}: {waiters} waiters, first hand-off µs {[round(x) for x in firsts]} "
          f"median {round(statistics.median(firsts))}; all served ms {[round(x) for x in alls]}")


if __name__ == "__main__":
    main()
