"""Decoded data sets kept as one tensor file, so the next run skips decoding (and importing torchvision).

Torchvision's readers parse IDX files, unpickle CIFAR batches or read SVHN's .mat files on every run,
and `import torchvision` alone takes about 1.5 s on a 2-core CPU: more than a whole epoch of an MLP on
MNIST. After the first successful load, the decoded uint8 tensors go to `<root>/.dlx-cache/<name>-<key>.pt`;
the key is a hash of the source files' names, sizes and modification times (and of what the loader was
asked to check), so a changed, added or removed file decodes afresh. The cache file is written atomically
and read with `weights_only=True`; one that cannot be read is decoded again and replaced. A root that
cannot be written to just goes without a cache.
"""

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from dlx import checkpoint
from dlx.data.base import Splits

log = logging.getLogger(__name__)
VERSION = 1  # bump when the stored layout or a loader's decoding changes


def fingerprint(files: list[str], salt: str) -> str | None:
    """Hash of (name, size, mtime) of `files` and `salt`; None when any file is missing (nothing to key on)."""
    h = hashlib.sha256(f"{VERSION}|{salt}".encode())
    for path in sorted(files):
        try:
            st = os.stat(path)
        except OSError:
            return None
        h.update(f"|{os.path.basename(path)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16] if files else None


def regular_files(folder: str) -> list[str]:
    """Every regular file directly in `folder` (none when it does not exist)."""
    try:
        return [e.path for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")]
    except OSError:
        return []


def _to_state(s: Splits) -> dict:
    state = {"train": list(s.train), "test": list(s.test), "classes": s.classes}
    if s.val is not None:
        state["val"] = list(s.val)
    return state


def _from_state(state: dict) -> Splits:
    val = state.get("val")
    return Splits(train=tuple(state["train"]), test=tuple(state["test"]),
                  val=tuple(val) if val is not None else None, classes=state["classes"])


def cached(root: str, name: str, files: Callable[[], list[str]], salt: str, decode: Callable[[], Splits]) -> Splits:
    """`decode()`'s result, from `<root>/.dlx-cache` when the files it reads are unchanged.

    Args:
        root: the data root; the cache folder is made inside it.
        name: the data set's name (file name prefix).
        files: the paths whose names, sizes and times key the cache (called before and after decoding,
            since decoding may download them).
        salt: what else changes the result (e.g. whether md5 sums were checked).
        decode: the real loader.
    """
    folder = Path(root) / ".dlx-cache"
    key = fingerprint(files(), salt)
    if key is not None and (folder / f"{name}-{key}.pt").is_file():
        try:
            with open(folder / f"{name}-{key}.pt", "rb") as f:
                return _from_state(torch.load(f, map_location="cpu", weights_only=True))
        except Exception as e:  # noqa: BLE001 - any unreadable cache is just decoded again
            log.warning("data cache %s unreadable (%s); decoding the files again", folder / f"{name}-{key}.pt", e)
    splits = decode()
    key = fingerprint(files(), salt)
    if key is not None:
        _store(folder, name, key, splits)
    return splits


def _store(folder: Path, name: str, key: str, splits: Splits) -> None:
    try:
        checkpoint.save(folder / f"{name}-{key}.pt", _to_state(splits))
        for old in folder.glob(f"{name}-*.pt"):  # earlier versions of the same files
            if old.name != f"{name}-{key}.pt":
                old.unlink(missing_ok=True)
    except OSError as e:
        log.info("no data cache in %s: %s", folder, e)
