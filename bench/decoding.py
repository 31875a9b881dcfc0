"""Decoders on the processor's real requests: decord, PyAV and torchcodec, time and peak memory, both resize modes.

    python bench/decoding.py                       # writes its test files once under --files_dir, then measures
    python bench/decoding.py --frames 8 --resolution 112 --repeats 5

The requests are `read_video(path, frames, resolution, resize)` as the processor and the dataset make them:
'squash' (R x R, flexible training) and 'shortest' (shorter side R, evaluation before the crop). The files, written
with PyAV (H.264, x264 defaults): a 3-minute landscape clip, a 720p clip, and a phone-style vertical clip (stored
landscape with a 90-degree display rotation). Each (file, resize, decoder)
cell runs in a fresh subprocess: the first call gives the peak resident memory above the level before it, the time
is the median of --repeats further calls. Prints the table and which decoder is faster per request.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FILES = {  # name: (seconds, stored width, stored height, fps, display rotation)
    "long_landscape": (180, 480, 270, 25, 0),
    "720p": (20, 1280, 720, 25, 0),
    "phone_vertical": (20, 640, 360, 25, 90),  # stored landscape, shown portrait, as phones record
}
DECODERS = ("decord", "pyav", "torchcodec")  # a decoder that does not import here gets its error in its cell


def write_test_file(path: Path, seconds: int, width: int, height: int, fps: int, rotation: int = 0) -> None:
    """A moving gradient with noise (so the encoder has real work), H.264 with x264's defaults (a keyframe every
    250 frames, as cameras and web videos), written frame by frame."""
    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:height, 0:width]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast"}
        if rotation:
            stream.set_display_rotation(rotation)
        for index in range(seconds * fps):
            base = ((xs + 4 * index) % 256).astype(np.uint8)
            frame = np.stack([base, ((ys + 2 * index) % 256).astype(np.uint8), base], -1)
            frame = np.clip(frame.astype(np.int16) + rng.integers(-8, 9, (1, width, 1)), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def child(path: str, decoder: str, resize: str, frames: int, resolution: int, repeats: int) -> None:
    import resource
    import statistics
    import time

    from modeling_stretchysnake.video_decoding import read_video

    read_video(path, 2, 32, "squash", backend=decoder)  # imports and codec set-up, not counted
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    out = read_video(path, frames, resolution, resize, backend=decoder)
    first = time.perf_counter() - start
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        read_video(path, frames, resolution, resize, backend=decoder)
        times.append(time.perf_counter() - start)
    print("RESULT " + json.dumps({"seconds": statistics.median(times) if times else first, "first": first,
                                  "peak_mib": peak, "shape": list(out.shape)}), flush=True)


def measure(path, decoder, resize, frames, resolution, repeats) -> dict:
    command = [sys.executable, __file__, "--child", str(path), decoder, resize, str(frames), str(resolution),
               str(repeats)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900,
                            env={"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                                 "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (result.stderr.strip().splitlines() or ["no output"])[-1][:100]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files_dir", default="outputs/decoding_bench", help="where the test files are written")
    parser.add_argument("--files", nargs="+", default=list(FILES), help=f"which of {list(FILES)}")
    parser.add_argument("--seconds_scale", type=float, default=1.0, help="scale the files' durations (tests)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    rows = []
    print(f"read_video(path, {args.frames}, {args.resolution}, resize): median of {args.repeats} calls after the "
          f"first (which gives the peak memory), fresh process per cell", flush=True)
    print(f"{'file':>16} {'size':>10} {'resize':>9} " + " ".join(f"{d + ' s':>10} {d + ' MiB':>11}" for d in DECODERS)
          + "   faster")
    for name in args.files:
        seconds, width, height, fps, rotation = FILES[name]
        seconds = max(1, round(seconds * args.seconds_scale))
        path = Path(args.files_dir) / f"{name}_{seconds}s_{width}x{height}_h264.mp4"
        if not path.exists():
            write_test_file(path, seconds, width, height, fps, rotation)
        for resize in ("squash", "shortest"):
            cells = {decoder: measure(path, decoder, resize, args.frames, args.resolution, args.repeats)
                     for decoder in DECODERS}
            row = {"file": name, "seconds_long": seconds, "width": width, "height": height, "resize": resize,
                   **{f"{d}_{k}": v for d in DECODERS for k, v in cells[d].items()}}
            rows.append(row)
            timed = {d: cells[d]["seconds"] for d in DECODERS if "seconds" in cells[d]}
            faster = min(timed, key=timed.get) if len(timed) > 1 else "-"
            text = " ".join(f"{cells[d]['seconds']:>10.3f} {cells[d]['peak_mib']:>11.1f}" if "seconds" in cells[d]
                            else f"{cells[d]['error'][:22]:>22}" for d in DECODERS)
            print(f"{name:>16} {f'{width}x{height}':>10} {resize:>9} {text}   {faster}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        path, decoder, resize, frames, resolution, repeats = sys.argv[2:]
        child(path, decoder, resize, int(frames), int(resolution), int(repeats))
    else:
        main()
