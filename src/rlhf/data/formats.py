"""Readers for every accepted data file -> records (`rlhf.data.records`).

One entry point per record kind, each `read_<kind>(path, *, skip_bad_rows=False)`:

    read_documents       corpus: .txt, or rows {"text"}
    read_demonstrations  {"prompt", "completion"}, {"messages": [...]}, or HH {"chosen": transcript}
    read_comparisons     {"prompt", "chosen", "rejected", "margin"?}, conversational messages, or
                         Anthropic HH {"chosen", "rejected"} transcripts
    read_rankings        {"prompt", "responses": [...], "ranking": [...]}
    read_binary_feedback {"prompt", "completion", "label": true|false}
    read_prompts         .txt (one prompt per non-empty line), {"prompt"}, or HH {"chosen"}
    read_preferences     comparisons and rankings mixed (a row with "responses"/"ranking" is a Ranking)

Containers, chosen by the path: `.jsonl` (one object per line; blank lines skipped), `.json`
(an array of objects), `.parquet`, a directory written by `datasets.Dataset.save_to_disk`, and
for documents and prompts `.txt`; `.jsonl`, `.json` and `.txt` may be gzipped (`.gz`). A name
that is no path but a Hub dataset id (`org/name[:split]`, rlhf.data.hub) is read through
`datasets` from the Hugging Face cache, each row checked the same way (place `split:row N`). In a
`.txt` corpus, documents are separated by `<|endoftext|>` markers when the file has any
(blank lines then stay inside a document as paragraph breaks), otherwise by blank lines.

What a row may hold, exactly, is written at the top of `rlhf.data.rows`, with the rule for HH
transcripts whose chosen and rejected differ before their last Assistant turn.

Errors: a malformed row raises `DataError`, whose message names the file, the place and the
problem: `data/prefs.jsonl:17: missing key "rejected"`. The place is the 1-based line for
`.jsonl` and `.txt`, the line where the element starts plus its 0-based index for a `.json`
array (`prefs.json:4: item [1]: ...`), and `row N` (1-based) for Parquet and `datasets`.
A missing file is a `FileNotFoundError`; a file with no rows, an unknown extension, a broken
gzip stream or a `.json` file that does not parse is a `DataError` about the whole file.

Skipping: with `skip_bad_rows=True` bad rows are dropped instead of raised. Every reader
returns a `Records` list; `records.skipped` is the number of rows dropped and
`records.errors` their `DataError`s, and one WARNING is logged to the `rlhf.data.formats`
logger (the count and the first error). Whole-file errors are raised even when skipping.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import zlib
from functools import partial
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, TypeVar, Union

from rlhf.data import hub, rows
from rlhf.data.records import BinaryFeedback, Comparison, Demonstration, Document, Prompt, Ranking

log = logging.getLogger(__name__)

T = TypeVar("T")
PathLike = Union[str, Path]
EOT = "<|endoftext|>"
_WHITESPACE = re.compile(r"[ \t\r\n]*")


class DataError(ValueError):
    """A malformed data file or row. `str(e)` is "path:place: problem"."""

    def __init__(self, path: PathLike, place: str | int | None, problem: str):
        self.path, self.place, self.problem = str(path), place, problem
        super().__init__(f"{path}:{place}: {problem}" if place is not None else f"{path}: {problem}")

    def __reduce__(self):
        return type(self), (self.path, self.place, self.problem)


class Records(list, Generic[T]):
    """The records read from a file; `skipped` bad rows were dropped (see `errors`)."""

    def __init__(self, items=(), errors: list[DataError] | None = None):
        super().__init__(items)
        self.errors: list[DataError] = errors or []

    @property
    def skipped(self) -> int:
        return len(self.errors)


# ---- containers: path -> (place, row or None, problem or None) ----------------------------

Row = tuple[Union[str, int], Union[dict, None], Union[str, None]]
ROW_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")
TEXT_SUFFIXES = (".txt", ".txt.gz")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in ROW_SUFFIXES + TEXT_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return path.suffix or "(no extension)"


def _read_bytes(path: Path) -> bytes:
    if not path.name.lower().endswith(".gz"):
        return path.read_bytes()
    try:
        return gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(path, None, f"not a valid gzip file ({e})") from None


def _decode(raw: bytes) -> tuple[str | None, str | None]:
    """Bytes of one line -> (text, None) or (None, problem)."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return None, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"


def _lines(path: Path) -> Iterator[tuple[int, str | None, str | None]]:
    """(1-based line number, text or None, problem or None) for every line."""
    data = _read_bytes(path)
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
        data = data[3:]
    for number, raw in enumerate(data.splitlines(), 1):
        yield (number, *_decode(raw))


def _object(value: Any) -> tuple[dict | None, str | None]:
    if isinstance(value, dict):
        return value, None
    return None, f"row is not a JSON object (got {rows.json_type(value)})"


def _jsonl_rows(path: Path) -> Iterator[Row]:
    for number, line, problem in _lines(path):
        if problem:
            yield number, None, problem
        elif line.strip():
            try:
                yield (number, *_object(json.loads(line)))
            except json.JSONDecodeError as e:
                yield number, None, f"invalid JSON: {e.msg} (column {e.colno})"


def _json_array_rows(path: Path) -> Iterator[Row]:
    """A JSON array of objects, each placed at the line where it starts."""
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(path, data.count(b"\n", 0, e.start) + 1, "not valid UTF-8") from None
    decode, skip = json.JSONDecoder().raw_decode, lambda j: _WHITESPACE.match(text, j).end()
    i = skip(0)
    if i == len(text):
        return
    try:
        if text[i] != "[":
            raise json.JSONDecodeError("a .json file must hold an array of objects", text, i)
        i, index = skip(i + 1), 0
        while not (index == 0 and text.startswith("]", i)):  # "[]" holds no rows
            value, end = decode(text, i)
            yield (f"{text.count(chr(10), 0, i) + 1}: item [{index}]", *_object(value))
            i, index = skip(end), index + 1
            if text.startswith("]", i):
                break
            if not text.startswith(",", i):
                raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
            i = skip(i + 1)
        if skip(i + 1) != len(text):
            raise json.JSONDecodeError("Extra data after the array", text, skip(i + 1))
    except json.JSONDecodeError as e:
        raise DataError(path, e.lineno, f"invalid JSON: {e.msg} (column {e.colno})") from None


def _parquet_rows(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches()
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ...
        raise DataError(path, None, f"not a readable Parquet file ({e})") from None
    number = 0
    for batch in batches:
        for row in batch.to_pylist():
            number += 1
            yield f"row {number}", row, None


def _dataset_rows(path: Path) -> Iterator[Row]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        problem = f"a directory must be a dataset saved with save_to_disk ({e})"
        raise DataError(path, None, problem) from None
    if isinstance(ds, datasets.DatasetDict):
        if len(ds) != 1:
            raise DataError(path, None, f"holds the splits {', '.join(ds)}; give the path of one split")
        (ds,) = ds.values()
    for number, row in enumerate(ds, 1):
        yield f"row {number}", row, None


def _text_documents(path: Path) -> Iterator[Row]:
    """Documents of a .txt corpus, each placed at the line where it starts."""
    lines = list(_lines(path))
    by_marker = any(line is not None and EOT in line for _, line, _ in lines)
    docs, start, buf, bad = [], None, [], None

    def end_document():
        nonlocal start, buf, bad
        text = "\n".join(buf).strip()
        if bad or text:
            docs.append((bad[0], None, bad[1]) if bad else (start, {"text": text}, None))
        start, buf, bad = None, [], None

    for number, line, problem in lines:
        if problem:
            bad = bad or (number, problem)  # the whole document is bad
            continue
        if not by_marker and not line.strip():
            end_document()
            continue
        for k, piece in enumerate(line.split(EOT) if by_marker else [line]):
            if k:
                end_document()
            if start is None and piece.strip():
                start = number
            buf.append(piece)
    end_document()
    return iter(docs)


def _text_prompts(path: Path) -> Iterator[Row]:
    for number, line, problem in _lines(path):
        if problem:
            yield number, None, problem
        elif line.strip():
            yield number, {"prompt": line.strip()}, None


# ---- one reader, many kinds --------------------------------------------------------------


def _bad_rows(n: int) -> str:
    return f"{n} bad row" + ("" if n == 1 else "s")


def _file_rows(p: Path, path: PathLike, text: Callable[[Path], Iterator[Row]] | None) -> Iterator[Row]:
    """The rows of a file or `save_to_disk` directory, by its type."""
    suffix = _suffix(p)
    if p.is_dir():
        return _dataset_rows(p)
    if suffix in (".jsonl", ".jsonl.gz"):
        return _jsonl_rows(p)
    if suffix in (".json", ".json.gz"):
        return _json_array_rows(p)
    if suffix == ".parquet":
        return _parquet_rows(p)
    if suffix in TEXT_SUFFIXES and text is not None:
        return text(p)
    accepted = ", ".join(ROW_SUFFIXES + (TEXT_SUFFIXES if text else ()))
    raise DataError(path, None, f"unknown file type {suffix}; accepted: {accepted}, "
                                "or a directory saved with datasets' save_to_disk, or a Hub dataset name")


def _read(path: PathLike, parse: Callable[[dict], T], skip_bad_rows: bool,
          text: Callable[[Path], Iterator[Row]] | None = None) -> Records[T]:
    p = Path(path)
    if not p.exists() and hub.looks_like_dataset_id(str(path)):
        source = hub.dataset_rows(str(path))  # a Hub dataset by name: places are `split:row N`
    elif not p.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    else:
        source = _file_rows(p, path, text)
    out: Records[T] = Records()
    for place, row, problem in source:
        if problem is None:
            try:
                out.append(parse(row))
                continue
            except rows.RowError as e:
                problem = str(e)
        error = DataError(path, place, problem)
        if not skip_bad_rows:
            raise error
        out.errors.append(error)
    if not out:
        skipped = f" ({_bad_rows(out.skipped)} skipped)" if out.errors else ""
        raise DataError(path, None, "no rows" + skipped)
    if out.errors:
        log.warning("%s: skipped %s; the first: %s", path, _bad_rows(out.skipped), out.errors[0])
    return out


def read_documents(path: PathLike, *, skip_bad_rows: bool = False) -> Records[Document]:
    """Documents from a .txt corpus or rows {"text"}."""
    return _read(path, rows.document, skip_bad_rows, _text_documents)


def read_demonstrations(path: PathLike, *, skip_bad_rows: bool = False) -> Records[Demonstration]:
    """Demonstrations from {"prompt", "completion"}, {"messages"} or HH {"chosen"} rows."""
    return _read(path, rows.demonstration, skip_bad_rows)


def read_comparisons(path: PathLike, *, skip_bad_rows: bool = False,
                     strict_hh: bool = False) -> Records[Comparison]:
    """Pairwise preferences; `strict_hh` makes HH pairs that differ before their last
    Assistant turn row errors instead of using their shared turns as the prompt."""
    return _read(path, partial(rows.comparison, strict_hh=strict_hh), skip_bad_rows)


def read_categorised_comparisons(path: PathLike, *,
                                 skip_bad_rows: bool = False) -> Records[tuple[Comparison, str]]:
    """(comparison, its row's `category`, "all" where the row has none) pairs, as RewardBench-style
    evaluation files carry them."""
    return _read(path, lambda row: (rows.comparison(row), str(row.get("category") or "all")), skip_bad_rows)


def read_rankings(path: PathLike, *, skip_bad_rows: bool = False) -> Records[Ranking]:
    """Listwise preferences from {"prompt", "responses", "ranking"} rows."""
    return _read(path, rows.ranking, skip_bad_rows)


def read_binary_feedback(path: PathLike, *, skip_bad_rows: bool = False) -> Records[BinaryFeedback]:
    """Thumbs up/down from {"prompt", "completion", "label": bool} rows."""
    return _read(path, rows.binary_feedback, skip_bad_rows)


def read_feedback(path: PathLike, *, skip_bad_rows: bool = False) -> Records[BinaryFeedback]:
    """KTO's data: binary feedback rows; a file of comparisons is split into a desirable chosen and
    an undesirable rejected completion per pair (as KTO's authors do with paired data). A file that
    is neither reports the binary-feedback reader's error."""
    try:
        return read_binary_feedback(path, skip_bad_rows=skip_bad_rows)
    except DataError as binary_error:
        try:
            comparisons = read_comparisons(path, skip_bad_rows=skip_bad_rows)
        except DataError:
            raise binary_error from None
    feedback = Records([fb for c in comparisons for fb in (BinaryFeedback(c.prompt, c.chosen, True),
                                                           BinaryFeedback(c.prompt, c.rejected, False))])
    feedback.errors = comparisons.errors
    return feedback


def read_prompts(path: PathLike, *, skip_bad_rows: bool = False) -> Records[Prompt]:
    """Prompts from a .txt (one per non-empty line, stripped), {"prompt"} or HH {"chosen"} rows."""
    return _read(path, rows.prompt, skip_bad_rows, _text_prompts)


def read_preferences(path: PathLike, *, skip_bad_rows: bool = False,
                     strict_hh: bool = False) -> Records[Union[Comparison, Ranking]]:
    """Comparisons and rankings from one file, in file order."""
    return _read(path, partial(rows.preference, strict_hh=strict_hh), skip_bad_rows)


READERS: dict[str, Callable[..., Records]] = {
    "documents": read_documents,
    "demonstrations": read_demonstrations,
    "comparisons": read_comparisons,
    "rankings": read_rankings,
    "binary_feedback": read_binary_feedback,
    "prompts": read_prompts,
    "preferences": read_preferences,
}
