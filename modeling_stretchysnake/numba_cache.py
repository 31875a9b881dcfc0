"""Compiling the numba CPU kernels once per machine, for every copy of their code, and saying so while it happens.

transformers copies the model's files into every saved model folder, and ``trust_remote_code`` imports each folder's
copy under a module name of its own (one per model and revision). numba keys its on-disk cache by the source file's
path and stores, in each entry, the name of the module the kernel was compiled in (loading an entry imports that
module). So each copy of the kernels would compile them again: a minute or more on a 2-core machine.

The kernels' module is therefore defined under one name taken from its file's content (``shared_module_name``),
and its compiled kernels are kept in one folder per content (``SharedCacheLocator``): the installed package, every
saved folder's copy and every revision with the same kernel source load what any of them compiled. A copy whose
source differs gets its own name and its own entries. Kernels are compiled for a dtype when a call first needs it
(``compile_kernels``), with one log line while numba works.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import time
from pathlib import Path

from filelock import FileLock  # huggingface_hub's dependency, so transformers'

try:  # transformers' remote-code import check skips try blocks: numba stays optional for Hub users
    from numba.core import caching, config, event
except ImportError as error:
    raise ImportError("the fused CPU kernels need numba (pip install numba)") from error

logger = logging.getLogger(__name__)


def shared_module_name(path: str | os.PathLike) -> str:
    """The module name every copy of the kernel file at `path` defines its kernels under: the same for the same
    content, another for any other."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return f"stretchysnake_cpu_kernels_{digest}"


def cache_root() -> Path:
    """Where compiled kernels are kept: numba's own setting (NUMBA_CACHE_DIR) when given, else the package's cache
    folder ($STRETCHYSNAKE_CACHE, by default ~/.cache/stretchysnake) under numba/."""
    if config.CACHE_DIR:
        return Path(config.CACHE_DIR)
    return Path(os.environ.get("STRETCHYSNAKE_CACHE") or Path.home() / ".cache" / "stretchysnake") / "numba"


def use_shared_cache(module_name: str) -> Path:
    """Keep the compiled kernels of `module_name` (a ``shared_module_name``) in one folder per kernel source, found
    by every copy of that source; returns the folder. Functions of other modules keep numba's usual locations."""

    in_tree = getattr(caching, "InTreeCacheLocator", None) or caching._InTreeCacheLocator  # numba < 0.61: private

    class SharedCacheLocator(in_tree):
        """numba's in-tree locator pointed at the shared folder, with the content digest as the source stamp (the
        same for every copy; numba's own stamp is the file's modification time in older releases)."""

        def __init__(self, py_func, py_file):
            super().__init__(py_func, py_file)
            self._cache_path = str(cache_root() / module_name)

        def get_source_stamp(self):
            return module_name

        @classmethod
        def from_function(cls, py_func, py_file):
            if getattr(py_func, "__module__", None) != module_name:
                return None
            return super().from_function(py_func, py_file)

    locators = (getattr(caching, "CacheImpl", None) or caching._CacheImpl)._locator_classes  # numba < 0.61: private
    if not any(getattr(locator, "module_name", None) == module_name for locator in locators):
        SharedCacheLocator.module_name = module_name
        locators.insert(0, SharedCacheLocator)
    return cache_root() / module_name


class _CompileNotice(event.Listener):
    """Logs one line when numba starts compiling (not when it loads from its cache) during a ``compile_kernels``."""

    def __init__(self, message: str):
        self.message = message
        self.compiled = False

    def on_start(self, event):
        if not self.compiled:
            self.compiled = True
            logger.warning(self.message)

    def on_end(self, event):
        pass


def compile_kernels(requests, what: str, seconds: float, cache_folder: Path | None) -> list:
    """The entry points of ``dispatcher.compile(signature)`` for each (dispatcher, signature) in `requests`, loaded
    from numba's cache or compiled. A compile logs one line first ("compiling the CPU kernels for `what` once,
    about `seconds` s") and one with the time it took. Processes that start together (training ranks, a model
    trained beside another) take turns through a lock in the cache folder: one compiles, the others load."""
    notice = _CompileNotice(
        f"compiling the CPU kernels ({what}) once, about {max(1, round(seconds))} s on a 2-core machine: numba "
        f"builds them for this CPU on first use and keeps them in {cache_folder or 'its cache'} for later runs and "
        "every copy of the model code")
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if cache_folder is not None:
            cache_folder.mkdir(parents=True, exist_ok=True)
            stack.enter_context(FileLock(str(cache_folder / "compiling.lock")))
        stack.enter_context(event.install_listener("numba:compile", notice))
        entries = [dispatcher.compile(signature) for dispatcher, signature in requests]
    if notice.compiled:
        logger.warning("compiled the CPU kernels (%s) in %.1f s", what, time.perf_counter() - start)
    return entries


def register_under(module_name: str, import_name: str) -> bool:
    """Make the module imported as `import_name` importable as `module_name` too, unless a copy with the same
    source already is (numba imports an entry's module by name when it loads the entry). False where the module
    is not in sys.modules (executed by hand, not imported): its kernels then compile without the shared cache."""
    module = sys.modules.get(import_name)
    if module is None:
        return False
    sys.modules.setdefault(module_name, module)
    return True
