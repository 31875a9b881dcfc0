"""Official VideoMamba checkpoints from the Hub, without the internet: a local HTTP server on 127.0.0.1 answers
the Hub's file route (``/{repo}/resolve/{revision}/{file}`` with the X-Repo-Commit and ETag headers
``hf_hub_download`` reads) and is pointed at through HF_ENDPOINT, so the real download path runs in a subprocess:
download and convert, the cache on the second call (no request), HF_HUB_OFFLINE, clear errors for a missing repo,
file or a truncated download (and no half-written folder), the CLI's Hub form, label names, predict.py."""

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from conftest import ROOT
from modeling_stretchysnake.labels import LABEL_SETS, detect_label_set, label_names
from modeling_stretchysnake.pretrained import HubCheckpoint, parse_hub_checkpoint
from test_convert_videomamba_checkpoint import official_tiny_state_dict

REPO = "OpenGVLab/VideoMamba"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
K400 = "videomamba_t16_k400_f8_res224.pth"
SSV2 = "videomamba_t16_ssv2_f8_res224.pth"
BREAKFAST = "videomamba_t16_breakfast_f32_res224.pth"
TRUNCATED = "videomamba_t16_k400_f16_res224.pth"  # half of a checkpoint, served whole: bad on the server
NOISE = "videomamba_t16_k400_f32_res224.pth"  # random bytes
TRAINING_STATE = "videomamba_t16_k400_f8_res224_checkpoint-best.pth"  # what the official training code's save_model writes
DROPPING = "videomamba_s16_k400_f8_res224.pth"  # the connection drops after CUT bytes on every try
CUT = 4096


def checkpoint_bytes(num_classes, num_frames=8, **extra):
    buffer = io.BytesIO()
    torch.save({"model": official_tiny_state_dict(num_frames=num_frames, num_classes=num_classes, depth=2, dim=32),
                **extra}, buffer)
    return buffer.getvalue()


def training_state_bytes():
    """A checkpoint as VideoMamba's `save_model` writes it (model, optimizer, epoch, scaler, the argparse options),
    with numpy scalars for the epoch and a metric, as research code often adds."""
    import argparse

    import numpy as np

    return checkpoint_bytes(400, optimizer={"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
                            epoch=np.int64(29), max_accuracy=np.float64(84.3), scaler={"scale": 65536.0},
                            args=argparse.Namespace(model="videomamba_tiny", lr=1e-4, num_frames=8))


class HubFileRoute(BaseHTTPRequestHandler):
    """HEAD and GET of /{owner}/{repo}/resolve/{revision}/{file}, answered as the Hub answers them."""

    def do_HEAD(self):
        self.respond(send_body=False)

    def do_GET(self):
        self.respond(send_body=True)

    def respond(self, send_body):
        self.server.hits.append(f"{self.command} {self.path}")
        if self.headers.get("Range"):
            self.server.hits.append(f"{self.command} {self.path.rsplit('/', 1)[-1]} {self.headers['Range']}")
        parts = urllib.parse.unquote(self.path.split("?")[0]).strip("/").split("/")
        repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
        files = self.server.repos.get(repo)
        if len(parts) < 5 or parts[2] != "resolve" or files is None or filename not in files:
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound" if files is None else "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = files[filename]
        first = 0  # a resumed download asks for the rest: "Range: bytes=N-"
        if send_body and (asked := self.headers.get("Range", "")).startswith("bytes="):
            first = int(asked[len("bytes="):].split("-")[0])
        self.send_response(206 if first else 200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data) - first))
        if first:
            self.send_header("Content-Range", f"bytes {first}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if send_body:
            # a connection that drops: `cut` bytes of the body, then closed (a list: one cut per request, the last
            # repeated)
            cut = self.server.cuts.get(filename)
            if cut is not None and self.server.cut_times.get(filename, 0) != 0:
                self.server.cut_times[filename] -= 1
                if isinstance(cut, list):
                    cut = cut.pop(0) if len(cut) > 1 else cut[0]
                self.wfile.write(data[first:first + cut])
                self.close_connection = True
                return
            self.wfile.write(data[first:])

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), HubFileRoute)
    server.hits = []
    server.cuts, server.cut_times = {}, {}  # filename -> bytes sent before the connection drops, and how often
    k400 = checkpoint_bytes(400)
    server.repos = {REPO: {K400: k400, SSV2: checkpoint_bytes(174), BREAKFAST: checkpoint_bytes(10, num_frames=32),
                           TRUNCATED: k400[: len(k400) // 2], NOISE: os.urandom(len(k400)),
                           TRAINING_STATE: training_state_bytes(), DROPPING: k400}}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def run(code_or_args, hub, tmp_path, cache="cache", offline=False, script=True):
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{hub.server_address[1]}", "HF_HOME": str(tmp_path / "hf"),
           "STRETCHYSNAKE_CACHE": str(tmp_path / cache), "PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_XET": "1",
           "OMP_NUM_THREADS": "1"}
    env.pop("HF_TOKEN", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env.pop("HF_HUB_OFFLINE", None)
    command = [sys.executable, "-c", code_or_args] if script else [sys.executable, *code_or_args]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


LOAD_K400 = f"""
from modeling_stretchysnake import StretchySnakeForVideoClassification, StretchySnakeModel
model = StretchySnakeForVideoClassification.from_videomamba("{REPO}", "{K400}")
print("labels", model.config.num_labels, model.config.id2label[0], model.config.id2label[399])
backbone = StretchySnakeModel.from_videomamba("{REPO}", "{K400}")
print("backbone", type(backbone).__name__, backbone.config.hidden_size)
"""


def test_from_videomamba_downloads_once_then_loads_from_the_cache_and_offline(hub, tmp_path):
    before = len(hub.hits)
    first = run(LOAD_K400, hub, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "labels 400 abseiling zumba" in first.stdout and "backbone StretchySnakeModel 32" in first.stdout
    requests = hub.hits[before:]
    assert any(hit.startswith("GET ") and hit.endswith(K400) for hit in requests)
    folder = tmp_path / "cache" / "videomamba" / "OpenGVLab--VideoMamba" / "main" / K400[:-4]
    saved = {path.name for path in folder.iterdir()}
    assert {"config.json", "model.safetensors"} <= saved and any("preprocessor" in name for name in saved)

    before = len(hub.hits)
    second = run(LOAD_K400, hub, tmp_path)
    assert second.returncode == 0 and "labels 400 abseiling zumba" in second.stdout, second.stderr[-3000:]
    assert hub.hits[before:] == []  # the converted folder is loaded without asking the Hub

    # offline, with an empty conversion cache: converted again from huggingface_hub's own cache
    offline = run(LOAD_K400, hub, tmp_path, cache="other-cache", offline=True)
    assert offline.returncode == 0 and "labels 400 abseiling zumba" in offline.stdout, offline.stderr[-3000:]
    assert hub.hits[before:] == []


def test_command_line_hub_form_writes_model_processor_and_label_names(hub, tmp_path):
    result = run(["-m", "modeling_stretchysnake.convert_videomamba_checkpoint", f"{REPO}/{SSV2}",
                  str(tmp_path / "out")], hub, tmp_path, script=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "174 labels (Approaching something with your camera, ...)" in result.stdout
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["id2label"]["0"] == "Approaching something with your camera" and len(config["id2label"]) == 174
    assert any("preprocessor" in path.name for path in (tmp_path / "out").iterdir())
    # a head that is neither K400 nor SSv2 keeps generic names; --labels names it
    result = run(["-m", "modeling_stretchysnake.convert_videomamba_checkpoint", f"{REPO}/{BREAKFAST}",
                  str(tmp_path / "breakfast")], hub, tmp_path, script=False)
    assert result.returncode == 0 and "10 labels" in result.stdout, result.stderr[-3000:]
    assert json.loads((tmp_path / "breakfast" / "config.json").read_text())["id2label"]["0"] == "LABEL_0"


@pytest.mark.parametrize("reference,expected", [
    (f"{REPO}/videomamba_t16_k400_f64_res224.pth", ["videomamba_t16_k400_f64_res224.pth", REPO, "no such file"]),
    ("OpenGVLab/NoSuchRepo/model.pth", ["OpenGVLab/NoSuchRepo", "model.pth", "no such repository"]),
], ids=["missing-file", "missing-repo"])
def test_missing_file_or_repository_is_one_clear_line(hub, tmp_path, reference, expected):
    result = run(["-m", "modeling_stretchysnake.convert_videomamba_checkpoint", reference, str(tmp_path / "out")],
                 hub, tmp_path, script=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert all(text in result.stderr for text in expected), result.stderr
    assert not (tmp_path / "out").exists()


def from_videomamba(filename):
    return (f"from modeling_stretchysnake import StretchySnakeForVideoClassification\n"
            f"model = StretchySnakeForVideoClassification.from_videomamba('{REPO}', '{filename}')\n"
            f"print('labels', model.config.num_labels, model.config.id2label[0])")


def three_ways(filename, hub, tmp_path, video, ways=("api", "cli", "predict")):
    """The API, the converter's console script and predict.py (or those of them in `ways`) on one Hub checkpoint:
    their results."""
    commands = {
        "api": lambda: run(from_videomamba(filename), hub, tmp_path),
        "cli": lambda: run(["-m", "modeling_stretchysnake.convert_videomamba_checkpoint", f"{REPO}/{filename}",
                            str(tmp_path / "out")], hub, tmp_path, script=False),
        "predict": lambda: run([str(ROOT / "recipes" / "predict.py"), "--model", f"{REPO}/{filename}", "--video",
                                str(video), "--frames", "2", "--resolution", "32"], hub, tmp_path, script=False),
    }
    return {way: commands[way]() for way in ways}


def error_line(result) -> str:
    """The one line a failed run printed about the error ('error: ...', or an exception's last line)."""
    assert result.returncode != 0, result.stdout[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ") or "Error: " in line]
    assert lines, result.stderr[-3000:]
    return lines[-1]


def assert_one_error(way, result):
    """The console scripts print one error line and no traceback; the API raises one exception, with no chained
    one (and neither suggests weights_only=False)."""
    assert "weights_only=False" not in result.stderr and "During handling" not in result.stderr, result.stderr
    if way != "api":
        assert "Traceback" not in result.stderr, result.stderr[-3000:]


@pytest.fixture
def clip(tmp_path):
    import numpy as np

    from modeling_stretchysnake.training.synthetic_actions import write_video

    return write_video(tmp_path / "clip.mp4", np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8))


def test_training_state_checkpoints_convert(hub, tmp_path):
    result = run(from_videomamba(TRAINING_STATE), hub, tmp_path)
    assert result.returncode == 0 and "labels 400 abseiling" in result.stdout, result.stderr[-3000:]


@pytest.mark.parametrize("filename", [TRUNCATED, NOISE], ids=["half-a-checkpoint", "random-bytes"])
def test_a_file_that_is_no_checkpoint_is_one_line_with_its_checksum(hub, tmp_path, clip, filename):
    etag = hashlib.sha256(hub.repos[REPO][filename]).hexdigest()
    for way, result in three_ways(filename, hub, tmp_path, clip).items():
        line = error_line(result)
        assert f"{REPO}/{filename}" in line and "is not a PyTorch checkpoint" in line and etag in line, (way, line)
        assert_one_error(way, result)
    assert not list((tmp_path / "cache").rglob(f"*{filename[:-4]}*"))  # neither the folder nor a partial one
    assert not (tmp_path / "out").exists()


def test_a_hub_file_that_calls_a_blocked_module_is_refused_by_name(hub, tmp_path, clip):
    """Not the damaged-download advice: the refused global and the file, from the API, the CLI and predict.py."""
    from test_convert_videomamba_checkpoint import malicious_checkpoints

    made = tmp_path / "made"
    made.mkdir()
    # each file one way (os.system through the API, subprocess.Popen through the CLI, eval through predict.py): the
    # refusal is one code path, and a subprocess costs seconds
    for way, (name, named) in zip(["api", "cli", "predict"], malicious_checkpoints(made).items()):
        filename = f"videomamba_t16_k400_f8_res224_{name}"
        hub.repos[REPO][filename] = (made / name).read_bytes()
        result = three_ways(filename, hub, tmp_path, clip, ways=[way])[way]
        line = error_line(result)
        assert f"{filename} holds " in line and named in line and "a safe load" in line, (way, line)
        assert "not a PyTorch checkpoint" not in line and "fetch it again" not in line, (way, line)
        assert_one_error(way, result)
    assert not (made / "it ran").exists() and not (tmp_path / "it ran").exists()


def test_a_download_dropped_on_every_try_is_one_line_and_a_retry_after_works(hub, tmp_path, clip):
    size = len(hub.repos[REPO][DROPPING])
    hub.cuts[DROPPING], hub.cut_times[DROPPING] = CUT, -1  # -1: every time
    try:
        results = three_ways(DROPPING, hub, tmp_path, clip)
    finally:
        hub.cut_times[DROPPING] = 0
    for way, result in results.items():
        line = error_line(result)
        assert all(text in line for text in (REPO, DROPPING, "revision main", f"at most {CUT:,} of {size:,} bytes",
                                             "6 requests dropped", "run it again")), line
        assert_one_error(way, result)
        retries = [line for line in result.stderr.splitlines() if "Trying to resume download" in line]
        assert len(retries) == (5 if way == "api" else 0), (way, result.stderr[-3000:])  # a script: one line
    assert not list((tmp_path / "cache").rglob(f"*{DROPPING[:-4]}*")) and not (tmp_path / "out").exists()
    hub.cut_times[DROPPING] = -1
    try:  # --debug: huggingface_hub's warnings too, each once
        debug = run(["-m", "modeling_stretchysnake.convert_videomamba_checkpoint", f"{REPO}/{DROPPING}",
                     str(tmp_path / "out"), "--debug"], hub, tmp_path, script=False)
    finally:
        hub.cut_times[DROPPING] = 0
    retries = [line for line in debug.stderr.splitlines() if "Trying to resume download" in line]
    assert len(retries) == 5 and not any(line.startswith("WARNING") for line in retries), debug.stderr[-3000:]
    fixed = run(from_videomamba(DROPPING), hub, tmp_path)  # the connection holds again
    assert fixed.returncode == 0 and "labels 400 abseiling" in fixed.stdout, fixed.stderr[-3000:]


def test_a_dropped_download_counts_the_most_that_arrived(hub, tmp_path):
    """The first request delivers 6,000 bytes, of which huggingface_hub writes one whole chunk of 4,096 and resumes
    from there; the later requests deliver 100 each: 6,000 arrived at most (the last request ended at 4,196)."""
    hub.cuts[DROPPING], hub.cut_times[DROPPING] = [6000, 100], -1
    small_chunks = "import huggingface_hub.constants\nhuggingface_hub.constants.DOWNLOAD_CHUNK_SIZE = 4096\n"
    try:
        result = run(small_chunks + from_videomamba(DROPPING), hub, tmp_path)
    finally:
        hub.cut_times[DROPPING] = 0
    line = error_line(result)
    assert f"at most 6,000 of {len(hub.repos[REPO][DROPPING]):,} bytes arrived, 6 requests dropped" in line, line


def test_a_single_drop_resumes_within_the_call(hub, tmp_path):
    """huggingface_hub asks for the rest (a Range request) of what it had written, in whole chunks of 10 MB: chunks
    of 1 KB here, so that this small file resumes as a large one does."""
    hub.cuts[DROPPING], hub.cut_times[DROPPING] = CUT, 1
    before = len(hub.hits)
    small_chunks = "import huggingface_hub.constants\nhuggingface_hub.constants.DOWNLOAD_CHUNK_SIZE = 1024\n"
    result = run(small_chunks + from_videomamba(DROPPING), hub, tmp_path)
    assert result.returncode == 0 and "labels 400 abseiling" in result.stdout, result.stderr[-3000:]
    assert f"GET {DROPPING} bytes={CUT}-" in hub.hits[before:]


def test_offline_without_the_file_cached_says_so(hub, tmp_path):
    result = run(["-m", "modeling_stretchysnake.convert_videomamba_checkpoint", f"{REPO}/{K400}",
                  str(tmp_path / "out")], hub, tmp_path, offline=True, script=False)
    assert result.returncode == 1 and "HF_HUB_OFFLINE is 1" in result.stderr and K400 in result.stderr


def test_predict_takes_a_hub_checkpoint(hub, tmp_path):
    import numpy as np

    from modeling_stretchysnake.training.synthetic_actions import write_video

    write_video(tmp_path / "clip.mp4", np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8))
    result = run([str(ROOT / "recipes" / "predict.py"), "--model", f"{REPO}/{K400}", "--video",
                  str(tmp_path / "clip.mp4"), "--frames", "2", "--resolution", "32", "--top_k", "3"], hub, tmp_path,
                 script=False)
    assert result.returncode == 0, result.stderr[-3000:]
    names = set(label_names("kinetics400"))
    assert sum(any(name in line for name in names) for line in result.stdout.splitlines()) >= 3


def test_shipped_label_names():
    kinetics = label_names("kinetics400")
    assert len(kinetics) == len(set(kinetics)) == 400 and kinetics[0] == "abseiling" and kinetics[-1] == "zumba"
    assert kinetics == sorted(kinetics)  # the official heads' order
    templates = label_names("something_something_v2")
    assert len(templates) == len(set(templates)) == 174
    assert templates[0] == "Approaching something with your camera"
    assert templates[67] == "Pretending to open something without actually opening it"
    assert not any("[" in name or "]" in name for name in templates)
    with pytest.raises(ValueError, match="unknown label set"):
        label_names("kinetics700")


@pytest.mark.parametrize("num_classes,filename,expected", [
    (400, "videomamba_m16_k400_f16_res224.pth", "kinetics400"),
    (400, "videomamba_m16_k400_mask_ft_f64_res224.pth", "kinetics400"),
    (174, "videomamba_s16_ssv2_f16_res224to288.pth", "something_something_v2"),
    (10, "videomamba_t16_breakfast_f32_res224.pth", None),
    (400, "videomamba_m16_ssv2_f8_res224.pth", None),  # size and name disagree
    (None, "videomamba_m16_k400_mask_pt_f8_res224.pth", None),  # pretraining file: no head
])
def test_label_set_detection(num_classes, filename, expected):
    assert detect_label_set(num_classes, filename) == expected
    assert set(LABEL_SETS) == {"kinetics400", "something_something_v2"}


def test_hub_checkpoint_references(tmp_path):
    assert parse_hub_checkpoint(f"{REPO}/{K400}") == HubCheckpoint(REPO, K400)
    assert parse_hub_checkpoint(f"{REPO}/sub/{K400}@v1.0") == HubCheckpoint(REPO, f"sub/{K400}", "v1.0")
    local = tmp_path / "OpenGVLab" / "VideoMamba" / K400
    local.parent.mkdir(parents=True)
    local.write_bytes(b"")
    assert parse_hub_checkpoint(local) is None  # an existing path is a local file
    for not_a_checkpoint in ("outputs/model", "OpenGVLab/VideoMamba", "MCG-NJU/videomae-base", f"/{K400}"):
        assert parse_hub_checkpoint(not_a_checkpoint) is None


def test_readme_pretrained_snippet_runs_verbatim(hub, tmp_path):
    """The README's first "Use" snippet (K400 VideoMamba from the Hub, then several scales), as written, against
    the local Hub serving a small model under the official file name."""
    import numpy as np

    from modeling_stretchysnake.training.synthetic_actions import write_video
    from test_hf_conventions import readme_python_blocks

    snippet = next(block for block in readme_python_blocks("Use") if "from_videomamba(" in block)
    hub.repos[REPO]["videomamba_m16_k400_f16_res224.pth"] = checkpoint_bytes(400, num_frames=16)
    write_video(tmp_path / "clip.mp4", np.random.default_rng(0).integers(0, 255, (12, 48, 64, 3), dtype=np.uint8))
    result = run(snippet, hub, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.split()[:2] in (["16", "224"], ["8", "126"],
                                                                                 ["32", "98"])]
    names = set(label_names("kinetics400"))
    assert len(lines) == 3 and all(sum(f"'{name}'" in line for name in names) == 3 for line in lines)
