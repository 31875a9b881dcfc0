"""Official VideoMamba checkpoints straight from the Hugging Face Hub: download, convert once, load.

A Hub checkpoint is written ``OWNER/REPO/FILE[@REVISION]``, e.g.
``OpenGVLab/VideoMamba/videomamba_m16_k400_f16_res224.pth`` (an existing local path always wins). The file comes
through ``huggingface_hub.hf_hub_download`` (its cache, ``revision``, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, the
token); the converted Hugging Face folder (weights as safetensors, config with the label names of K400 / SSv2
heads, the video processor) is cached under ``$STRETCHYSNAKE_CACHE/videomamba`` (default
``~/.cache/stretchysnake``), keyed by repository, revision and file, so later calls load it without a request.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .cli import library_warnings_wanted, run_cli
from .configuration_stretchysnake import KERNEL_RESIZE_MODES, SCALE_MODES
from .convert_videomamba_checkpoint import (
    ConversionError,
    NotACheckpointError,
    convert_checkpoint,
    name_detected_labels,
    save_with_processor,
)
from .labels import label_names

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin")


@dataclass(frozen=True)
class HubCheckpoint:
    repo_id: str
    filename: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{self.repo_id}/{self.filename}" + (f"@{self.revision}" if self.revision else "")


def parse_hub_checkpoint(reference: str | os.PathLike) -> HubCheckpoint | None:
    """``OWNER/REPO/FILE.pth[@REVISION]`` -> HubCheckpoint; None for an existing path or anything else."""
    reference = str(reference)
    if Path(reference).exists():
        return None
    path, _, revision = reference.partition("@")
    parts = path.split("/")
    if len(parts) < 3 or not all(parts) or not path.endswith(CHECKPOINT_SUFFIXES):
        return None
    return HubCheckpoint("/".join(parts[:2]), "/".join(parts[2:]), revision or None)


def download(checkpoint: HubCheckpoint, token: str | bool | None = None, force_download: bool = False) -> Path:
    """The checkpoint file in the Hub cache (downloaded if needed); a ConversionError that names the repository
    and file when it cannot be had."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from huggingface_hub import errors

    transfer_errors = (getattr(errors, "HTTPError", OSError), OSError)  # the HTTP client's base error, or OSError

    where = f"{checkpoint.filename!r} from the Hub repository {checkpoint.repo_id!r}"
    attempts = _DownloadAttempts(silence=not library_warnings_wanted())
    hub_logger = logging.getLogger("huggingface_hub.file_download")
    hub_logger.addFilter(attempts)
    try:
        return Path(hf_hub_download(checkpoint.repo_id, checkpoint.filename, revision=checkpoint.revision,
                                    token=token, force_download=force_download))
    except LocalEntryNotFoundError as error:  # offline (HF_HUB_OFFLINE=1 or no network) and not in the cache
        raise ConversionError(f"cannot download {where}: the Hub cannot be reached (HF_HUB_OFFLINE is "
                              f"{os.environ.get('HF_HUB_OFFLINE', 'unset')}) and the file is not in the local "
                              f"Hub cache") from error
    except RepositoryNotFoundError as error:
        raise ConversionError(f"cannot download {where}: no such repository (or a private one: log in or pass "
                              f"a token)") from error
    except RevisionNotFoundError as error:
        raise ConversionError(f"cannot download {where}: no revision {checkpoint.revision!r}") from error
    except EntryNotFoundError as error:  # (after LocalEntryNotFoundError, its subclass)
        raise ConversionError(f"cannot download {where}: the repository has no such file") from error
    except transfer_errors as error:  # e.g. the connection dropped on every retry
        first_line = str(error).strip().split("\n")[0]
        raise ConversionError(f"cannot download {where} (revision {checkpoint.revision or 'main'}): "
                              f"{type(error).__name__}: {first_line}"
                              f"{_bytes_received(checkpoint, token, attempts.errors or [str(error)])}") from None
    finally:
        hub_logger.removeFilter(attempts)


class _DownloadAttempts(logging.Filter):
    """huggingface_hub's warnings of a download's failed requests ("Error while downloading from URL: ERROR ...
    Trying to resume download" / "Max retries exceeded"): kept, for the error to count them, and with `silence`
    not printed (console scripts: one error line; --debug prints them)."""

    def __init__(self, silence: bool):
        super().__init__()
        self.silence = silence
        self.errors: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith("Error while downloading from "):
            return True
        self.errors.append(message)
        return not self.silence


def _bytes_received(checkpoint: HubCheckpoint, token, failed_requests: list[str]) -> str:
    """How far an interrupted download got at most, from the file's size on the Hub and each failed request's count
    ("received R bytes, expected E": E is what remained when that request resumed), and how many requests failed;
    '' if unknown."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    counts = [tuple(int(value) for value in found.groups()) for text in failed_requests
              if (found := re.search(r"received (\d+) bytes, expected (\d+)", text))]
    try:
        size = get_hf_file_metadata(hf_hub_url(checkpoint.repo_id, checkpoint.filename, revision=checkpoint.revision),
                                    token=token).size
    except Exception:  # noqa: BLE001 - the Hub cannot say either: report the download error alone
        return ""
    if not counts or size is None:
        return ""
    arrived = max(size - remaining + received for received, remaining in counts)
    return (f"; at most {arrived:,} of {size:,} bytes arrived, {len(failed_requests)} requests dropped "
            f"(huggingface_hub resumes from the last whole chunk it wrote and keeps no partial file): run it again "
            f"to download it anew")


def _cache_checksum(path: Path) -> str:
    """The checksum huggingface_hub recorded for a downloaded file: its blob's name, the ETag (the SHA256 of an LFS
    file), or the file's SHA256 where the cache holds copies instead of links."""
    blob = path.resolve()
    if blob.parent.name == "blobs":
        return f"ETag {blob.name}"
    import hashlib

    digest = hashlib.sha256()
    with blob.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"SHA256 {digest.hexdigest()}"


def cache_root() -> Path:
    return Path(os.environ.get("STRETCHYSNAKE_CACHE", Path.home() / ".cache" / "stretchysnake")) / "videomamba"


def converted_folder(checkpoint: HubCheckpoint) -> Path:
    stem = Path(checkpoint.filename).name.rsplit(".", 1)[0]
    return cache_root() / checkpoint.repo_id.replace("/", "--") / (checkpoint.revision or "main") / stem


def pretrained_folder(checkpoint: HubCheckpoint | str, token: str | bool | None = None,
                      force_download: bool = False) -> Path:
    """The converted folder of a Hub checkpoint: from the cache, else downloaded and converted into it (written
    to a temporary folder and moved in place, so a failed conversion leaves nothing behind)."""
    if isinstance(checkpoint, str):
        parsed = parse_hub_checkpoint(checkpoint)
        if parsed is None:
            raise ConversionError(f"{checkpoint!r} is neither a local file nor a Hub checkpoint OWNER/REPO/FILE.pth")
        checkpoint = parsed
    folder = converted_folder(checkpoint)
    if (folder / "config.json").exists() and not force_download:
        return folder
    path = download(checkpoint, token=token, force_download=force_download)
    if force_download:
        shutil.rmtree(folder, ignore_errors=True)
    staging = folder.parent / f".{folder.name}.partial-{os.getpid()}"
    try:
        model = convert_hub_file(checkpoint, path)
        name_detected_labels(model, checkpoint.filename)
        save_with_processor(model, staging)
        try:
            os.replace(staging, folder)
        except OSError:  # another process (a rank of the same launch) finished first: keep its folder
            if not (folder / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("converted %s into %s", checkpoint, folder)
    return folder


def convert_hub_file(checkpoint: HubCheckpoint, path: Path, **config_overrides):
    """`convert_checkpoint` of a file downloaded for `checkpoint`; its errors name the Hub checkpoint, and for a
    file that is no checkpoint at all, the checksum huggingface_hub recorded, to compare with the Hub's."""
    try:
        return convert_checkpoint(path, **config_overrides)
    except NotACheckpointError as error:  # downloaded whole (huggingface_hub checks the size), yet no checkpoint
        reason = str(error).split(" is not a PyTorch checkpoint ")[-1]
        raise NotACheckpointError(
            f"{checkpoint}: the file the Hub served is not a PyTorch checkpoint {reason}; huggingface_hub recorded "
            f"{_cache_checksum(path)} (at {path}): if that differs from the SHA256 on the file's Hub page, fetch "
            f"it again (force_download=True, --force-download), else the file on the Hub is not a checkpoint"
        ) from None
    except ConversionError as error:
        raise ConversionError(f"{checkpoint}: {error}") from None


def resolve_model_reference(reference: str, token: str | bool | None = None) -> str:
    """A model reference for ``from_pretrained``: a Hub checkpoint ``OWNER/REPO/FILE.pth`` becomes its converted
    folder; anything else (a folder, a Hub model id) is returned as it is."""
    checkpoint = parse_hub_checkpoint(reference)
    return str(pretrained_folder(checkpoint, token=token)) if checkpoint is not None else reference


def from_videomamba(model_class, repo_id: str, filename: str, revision: str | None = None, *,
                    token: str | bool | None = None, force_download: bool = False, **kwargs):
    """An official VideoMamba checkpoint from the Hugging Face Hub, converted, e.g.
    ``StretchySnakeForVideoClassification.from_videomamba("OpenGVLab/VideoMamba",
    "videomamba_m16_k400_f16_res224.pth")`` (Kinetics-400 class names included);
    ``StretchySnakeModel.from_videomamba(...)`` gives the backbone alone. (The package attaches this function to
    the model classes as a classmethod: the model files do not import the converter.)

    The file is downloaded with ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, `token`)
    and converted once into ``$STRETCHYSNAKE_CACHE/videomamba`` (with its video processor); later calls load
    that folder without any request. `force_download` fetches and converts again. Other keyword arguments go
    to ``from_pretrained`` (e.g. ``num_labels=101, ignore_mismatched_sizes=True`` for a new head).
    """
    folder = pretrained_folder(HubCheckpoint(repo_id, filename, revision), token=token, force_download=force_download)
    return model_class.from_pretrained(folder, **kwargs)


def load_model(model_class, reference: str, **kwargs):
    """``model_class.from_pretrained`` on a model reference (see `resolve_model_reference`), with an error that
    names the reference when nothing loads from it."""
    resolved = resolve_model_reference(reference, token=kwargs.get("token"))
    try:
        return model_class.from_pretrained(resolved, **kwargs)
    except OSError as error:
        raise OSError(f"cannot load a model from {reference!r} (not a model folder here, nor a model id or an "
                      f"OWNER/REPO/FILE.pth checkpoint the Hub has): {error}") from error


def convert_main(argv: list[str] | None = None) -> None:
    """The command line: convert, or raise an error whose message is the one line `cli` prints."""
    from . import convert_videomamba_checkpoint as converter
    from .labels import LABEL_SETS

    parser = argparse.ArgumentParser(prog="stretchysnake-convert-videomamba", description=converter.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="official VideoMamba .pth file: a local path, or a Hub checkpoint "
                                           "OWNER/REPO/FILE[@REVISION], e.g. "
                                           "OpenGVLab/VideoMamba/videomamba_m16_k400_f16_res224.pth")
    parser.add_argument("output_dir", help="folder to write the Hugging Face model (and its video processor) to")
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit); same as @REVISION")
    parser.add_argument("--token", help="Hub token (default: the one huggingface_hub finds, if any)")
    parser.add_argument("--force-download", action="store_true", help="download again even if cached")
    parser.add_argument("--num-labels", type=int, help="start a new head with this many classes")
    parser.add_argument("--labels", help="class names: a JSON file (a list, or an {index: name} map) or a label set "
                                         f"shipped with the package ({', '.join(LABEL_SETS)}); default: detected "
                                         "for Kinetics-400 and Something-Something V2 heads")
    parser.add_argument("--kernel-resize-mode", choices=KERNEL_RESIZE_MODES)
    parser.add_argument("--scale-mode", choices=SCALE_MODES)
    args = parser.parse_args(argv)
    # This package's progress on a handler of its own; huggingface_hub prints its warnings (retries) through its own
    # handler, so nothing goes to the root logger, where they would print a second time.
    package_logger = logging.getLogger(__package__)
    if not package_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    package_logger.propagate = False

    overrides = {}
    if args.labels:
        labels = label_names(args.labels) if args.labels in LABEL_SETS else json.loads(Path(args.labels).read_text())
        id2label = dict(enumerate(labels)) if isinstance(labels, list) else {int(k): v for k, v in labels.items()}
        overrides.update(id2label=id2label, num_labels=len(id2label))
    if args.num_labels is not None:
        overrides["num_labels"] = args.num_labels
    for name in ("kernel_resize_mode", "scale_mode"):
        if getattr(args, name):
            overrides[name] = getattr(args, name)
    hub = parse_hub_checkpoint(args.checkpoint)
    if hub is None:
        model = convert_checkpoint(args.checkpoint, **overrides)
    else:
        if args.revision:
            hub = dataclasses.replace(hub, revision=args.revision)
        path = download(hub, token=args.token, force_download=args.force_download)
        model = convert_hub_file(hub, path, **overrides)
    if not ({"id2label", "num_labels"} & set(overrides)):
        name_detected_labels(model, str(args.checkpoint))
    save_with_processor(model, args.output_dir)
    config = model.config
    print(
        f"saved {args.output_dir}: hidden {config.hidden_size} x {config.num_hidden_layers} layers, "
        f"{config.num_frames} base frames, {config.image_size} px, {config.num_labels} labels"
        + (f" ({config.id2label[0]}, ...)" if config.num_labels and not config.id2label[0].startswith("LABEL_")
           else "")
    )


def convert_cli() -> None:
    """`stretchysnake-convert-videomamba`: any error is one line on stderr and exit status 1 (--debug: traceback)."""
    run_cli(convert_main)


__all__ = ["HubCheckpoint", "convert_cli", "convert_hub_file", "from_videomamba", "load_model", "parse_hub_checkpoint",
           "pretrained_folder", "resolve_model_reference", "save_with_processor"]
