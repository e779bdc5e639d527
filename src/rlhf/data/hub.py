"""Datasets by Hub name: `--data org/name`, with an optional revision, config and split:

    org/name                  the only split (or "train")
    org/name:test             split "test"
    org/name:harmless-base:train   config (or data folder) "harmless-base", split "train"
    org/name@<commit>:train   a pinned revision (what config.yaml records)

The repository is fetched once into the Hugging Face cache with `huggingface_hub` (data files
only: no loading scripts run) and read with `datasets.load_dataset` from that snapshot, offline
afterwards (`HF_HUB_OFFLINE=1`). Rows go through the same row checks as files; an error names
`org/name:split:row N`. `pin_dataset` gives `org/name@<commit>:...`, so a rerun reads the same data.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

DATASET_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w.-]+)?(:[\w.-]+){0,2}$")
DATA_FILES = ["*.json", "*.jsonl", "*.jsonl.gz", "*.json.gz", "*.parquet", "*.csv", "*.txt", "*.arrow", "README.md",
              "**/*.json", "**/*.jsonl", "**/*.jsonl.gz", "**/*.json.gz", "**/*.parquet", "**/*.csv", "**/*.txt",
              "**/*.arrow"]

FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".txt", ".gz", ".csv", ".arrow")


class HubDatasetError(FileNotFoundError):
    """A dataset name that cannot be resolved to data in the cache."""


def looks_like_dataset_id(spec: str) -> bool:
    """`org/name[@revision][:config][:split]` that is not an existing path."""
    text = str(spec)
    a_file_name = text.lower().endswith(FILE_SUFFIXES)  # `data/train.jsonl` that is missing: a missing file
    return (bool(DATASET_ID.match(text)) and not a_file_name and not text.startswith((".", "/", "~"))
            and not Path(text).exists())


def parse(spec: str) -> tuple[str, str | None, str | None, str | None]:
    """(repo, revision, config, split) of a dataset name."""
    name, *rest = str(spec).split(":")
    repo, _, revision = name.partition("@")
    config, split = (rest[0], rest[1]) if len(rest) == 2 else (None, rest[0] if rest else None)
    return repo, revision or None, config, split


def snapshot(repo: str, revision: str | None) -> Path:
    """The local snapshot of dataset `repo` (data files only), from the cache or downloaded."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    where = f"{repo}@{revision}" if revision else repo
    try:
        return Path(snapshot_download(repo, repo_type="dataset", revision=revision, allow_patterns=DATA_FILES,
                                      local_files_only=True))
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            raise HubDatasetError(f"dataset {where!r} is neither a local file nor in the Hugging Face cache, and "
                                  f"HF_HUB_OFFLINE=1: on a machine with a network run `hf download {repo} --repo-type "
                                  "dataset` (same HF_HOME), then run again") from None
    try:
        from huggingface_hub.utils import get_session

        get_session().head(constants.ENDPOINT, timeout=10)  # one try: without a network, say so at once
        return Path(snapshot_download(repo, repo_type="dataset", revision=revision, allow_patterns=DATA_FILES))
    except Exception as err:  # noqa: BLE001 - one line with what to do, not a traceback
        raise HubDatasetError(f"dataset {where!r} is neither a local file nor in the Hugging Face cache, and the Hub "
                              f"could not be read ({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None


def load(spec: str):
    """(the `datasets.Dataset` a name selects, the split read)."""
    import datasets

    repo, revision, config, split = parse(spec)
    local = snapshot(repo, revision)
    try:
        loaded = datasets.load_dataset(str(local), name=config)
    except (ValueError, FileNotFoundError) as err:
        if config is None or not (local / config).is_dir():
            raise HubDatasetError(f"dataset {spec!r}: {str(err).splitlines()[0]}") from None
        # a folder rather than a declared config: Anthropic/hh-rlhf:harmless-base:train
        loaded = datasets.load_dataset(str(local), data_dir=config)
    if split is None:
        split = next(iter(loaded)) if len(loaded) == 1 else "train"
    if split not in loaded:
        raise HubDatasetError(f"dataset {spec!r} has no split {split!r}; its splits: {', '.join(loaded)} "
                              f"(choose with {repo}:SPLIT)")
    return loaded[split], split


def dataset_rows(spec: str) -> Iterator[tuple[str, dict, None]]:
    """(place `split:row N`, row, None) for each row of the dataset `spec` names."""
    ds, split = load(spec)
    for number, row in enumerate(ds, 1):
        yield f"{split}:row {number}", row, None


def pin_dataset(spec: str) -> str:
    """`org/name@<commit>[:config][:split]`: the name with the revision its snapshot resolved to."""
    if not looks_like_dataset_id(spec):
        return spec
    repo, revision, config, split = parse(spec)
    commit = snapshot(repo, revision).name  # the cache's snapshots/<commit>
    tail = ":".join(part for part in (config, split) if part)
    return f"{repo}@{commit}" + (f":{tail}" if tail else "")
