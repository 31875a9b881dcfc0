"""The main job as `make demo` runs it (one process, the launcher's values given), for the benches that repeat it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "recipes" / "train.py")]
TABLES = "top-1 accuracy (%) over frames x resolution"


def run_main_job(output: Path, data_root: Path, flags: list[str], env: dict | None = None,
                 busy: bool = False) -> dict:
    """Run the main job into `output` with clips under `data_root` (rendered there if absent) and extra `flags`;
    with `busy`, another process keeps a core busy meanwhile. Its output goes to `output`.log; returns the
    wall seconds and the tables it printed. Exits with a message if the job fails."""
    command = LAUNCH + ["--output_dir", str(output), "--data_root", str(data_root), *flags]
    busy_process = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    start = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                                capture_output=True, text=True)
    finally:
        if busy_process is not None:
            busy_process.kill()
    seconds = time.perf_counter() - start
    log = output.with_name(output.name + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0 or TABLES not in result.stdout:
        sys.exit(f"error: the main job failed (exit {result.returncode}); its output: {log}")
    tables = result.stdout[result.stdout.index(TABLES):].split("\nfixed-scale model:")[0].strip()
    return {"seconds": seconds, "tables": tables}


def grids(output: Path) -> dict[str, list[dict]]:
    """The accuracy grids a run wrote: {"flexible": rows, "fixed": rows} (rows of scale_grid.json)."""
    found = {"flexible": output / "scale_grid.json", "fixed": output / "fixed_scale" / "scale_grid.json"}
    return {name: json.loads(path.read_text()) for name, path in found.items() if path.exists()}
