"""Writing what the readers read: `write_jsonl`, and `read_json` for one JSON document.

Every stage that writes rows for another to read (candidates, comparisons, demonstrations,
prompts, exported labels) writes them with `write_jsonl`: the file is replaced atomically and
durably (a reader, or a run resumed after a crash, sees the old file or the new one, never half),
UTF-8 as it is (no \\u escapes), strict JSON (a NaN or an infinity is an error naming the file,
not a token other readers reject). No torch: the feedback web app writes with it too.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """Write `rows` as JSON lines to `path` (its parent made if missing), replacing it atomically; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        text = "".join(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n" for row in rows)
    except ValueError as err:  # allow_nan=False: "Out of range float values are not JSON compliant"
        raise ValueError(f"{path}: a row holds a number JSON cannot (NaN or infinity): {err}") from None
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.",
                                     suffix=".tmp", delete=False) as tmp:
        tmp.write(text)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)
    directory = os.open(path.parent, os.O_RDONLY)  # the rename is durable once the directory is
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path


def read_json(path: str | Path, *, missing_ok: bool = False) -> Any:
    """The JSON document in `path`; with missing_ok, None when there is no such file. A file that
    is not JSON is a ValueError naming it."""
    path = Path(path)
    if missing_ok and not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from None
