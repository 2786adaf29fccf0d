"""How long `hangar list` takes from exec to exit, against Python's own start-up.

    .venv/bin/python -m bench.cli_start [--rounds 25]

Starts a hangard on a scratch HANGAR_HOME (root), then runs, interleaved, `python -c
pass` (the floor: the interpreter alone) and the `hangar` entry script with `list`.
Reports the minimum and median of each (the machine is shared: the minimum is the
figure that repeats) and their difference, and writes bench/results/cli_start.json.
Issue 15's bar: `hangar list` <= 0.15 s on this machine (~0.22 s before).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV = Path(sys.executable).parent
RESULTS = Path(__file__).parent / "results"


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="hg-cli-", dir="/tmp"))
    env = {**os.environ, "HANGAR_HOME": str(home)}
    daemon = subprocess.Popen([str(VENV / "hangard")], env=env, stderr=subprocess.DEVNULL)
    try:
        socket = home / "run" / "api" / "hangard.sock"
        deadline = time.monotonic() + 60
        while not socket.exists():
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit("hangard did not start")
            time.sleep(0.1)
        timed([str(VENV / "hangar"), "list"], env)  # warm the page cache
        floor, listing = [], []
        for _ in range(args.rounds):
            floor.append(timed([sys.executable, "-c", "pass"], env))
            listing.append(timed([str(VENV / "hangar"), "list"], env))
    finally:
        daemon.terminate()
        daemon.wait()
        subprocess.run(["rm", "-rf", str(home)], check=False)
    result = {
        "rounds": args.rounds,
        "python_pass_min_s": round(min(floor), 4),
        "python_pass_median_s": round(statistics.median(floor), 4),
        "hangar_list_min_s": round(min(listing), 4),
        "hangar_list_median_s": round(statistics.median(listing), 4),
        "hangar_over_python_min_s": round(min(listing) - min(floor), 4),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cli_start.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
