"""Readers in rlhf.data.formats: every container, every row format, every error names file and line."""

import gzip
import json
import logging
from importlib.resources import files
from pathlib import Path

import pytest

from rlhf.data import (
    BinaryFeedback,
    Comparison,
    DataError,
    Demonstration,
    Document,
    Message,
    Prompt,
    Ranking,
    read_binary_feedback,
    read_comparisons,
    read_demonstrations,
    read_documents,
    read_preferences,
    read_prompts,
    read_rankings,
)

HH = Path(__file__).resolve().parents[1] / "assets" / "hh-rlhf"  # real data in the repository: tests/assets/README.md
TINYSTORIES = Path(str(files("rlhf.resources") / "tinystories" / "train.txt.gz"))  # what `rlhf pretrain` reads


def U(text):
    return Message("user", text)


def A(text):
    return Message("assistant", text)


def m(role, content="x"):
    """A message as it appears in a row."""
    return {"role": role, "content": content}


def write(tmp_path, name, content) -> Path:
    """Write str/bytes content, or JSON lines for a list of rows; gzip when the name says so."""
    if isinstance(content, list):
        content = "".join(json.dumps(row) + "\n" for row in content)
    data = content.encode() if isinstance(content, str) else content
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def rows_jsonl(tmp_path, name, rows):
    return write(tmp_path, name, rows)


def rows_json(tmp_path, name, rows):
    return write(tmp_path, name, json.dumps(rows, indent=1))


def rows_parquet(tmp_path, name, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / name)
    return tmp_path / name


def rows_dataset(tmp_path, name, rows):
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / name))
    return tmp_path / name


# ---- containers ----------------------------------------------------------------------------

PAIRS = [
    {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No.", "margin": 2},
    {"prompt": "Count to two.", "chosen": "1 2", "rejected": "2 1", "margin": 0.5},
]
WANT = [Comparison("Say hi.", "Hi!", "No.", 2.0), Comparison("Count to two.", "1 2", "2 1", 0.5)]


@pytest.mark.parametrize("write_rows, name", [
    (rows_jsonl, "p.jsonl"), (rows_jsonl, "p.jsonl.gz"), (rows_json, "p.json"), (rows_json, "p.json.gz"),
    (rows_parquet, "p.parquet"), (rows_dataset, "p_dataset"),
])
def test_every_container_gives_the_same_records(tmp_path, write_rows, name):
    records = read_comparisons(write_rows(tmp_path, name, PAIRS))
    assert records == WANT and records.skipped == 0
    assert isinstance(records[0].margin, float)


def test_dataset_dict_with_one_split(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(PAIRS)}).save_to_disk(str(tmp_path / "d"))
    assert read_comparisons(tmp_path / "d") == WANT


def test_parquet_row_errors_name_the_row(tmp_path):
    path = rows_parquet(tmp_path, "p.parquet", [PAIRS[0], {"prompt": "x", "chosen": "y", "rejected": None}])
    with pytest.raises(DataError, match=r'p\.parquet:row 2: "rejected" is null'):
        read_comparisons(path)


def test_json_array_errors_name_the_line_and_item(tmp_path):
    path = rows_json(tmp_path, "p.json", [PAIRS[0], {"prompt": "x", "chosen": "y"}])
    assert path.read_text().splitlines()[7] == " {"  # indent=1: item [1] starts on line 8
    with pytest.raises(DataError, match=r'p\.json:8: item \[1\]: missing key "rejected"'):
        read_comparisons(path)


# ---- row formats -----------------------------------------------------------------------------

HH_CHOSEN = "\n\nHuman: Hi there\n\nAssistant:  Hello!  \n\nHuman: How do I bake bread?\n\nAssistant: Knead it."
HH_REJECTED = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How do I bake bread?\n\nAssistant: Buy it."
HH_PROMPT = (U("Hi there"), A("Hello!"), U("How do I bake bread?"))


@pytest.mark.parametrize("row, want", [
    ({"prompt": "p", "chosen": "c", "rejected": "r"}, Comparison("p", "c", "r")),
    ({"prompt": "p", "chosen": "", "rejected": "r", "margin": None}, Comparison("p", "", "r")),
    ({"prompt": [m("system", "Be brief."), m("user", "Hi")], "chosen": [m("assistant", "Hi.")],
      "rejected": m("assistant", "Yo")},
     Comparison((Message("system", "Be brief."), U("Hi")), "Hi.", "Yo")),
    ({"chosen": [m("user", "Hi"), m("assistant", "Hello")], "rejected": [m("user", "Hi"), m("assistant", "Go away")]},
     Comparison((U("Hi"),), "Hello", "Go away")),
    ({"chosen": HH_CHOSEN, "rejected": HH_REJECTED}, Comparison(HH_PROMPT, "Knead it.", "Buy it.")),
])
def test_comparison_rows(tmp_path, row, want):
    assert read_comparisons(write(tmp_path, "c.jsonl", [row])) == [want]


def test_hh_pair_differing_before_the_last_assistant_turn(tmp_path):
    # The rejected reply of the real data sometimes runs on into turns of its own.
    rejected = HH_REJECTED.replace("Buy it.", "Buy it.\n\nHuman: Why?\n\nAssistant: Easier.")
    path = write(tmp_path, "hh.jsonl", [{"chosen": HH_CHOSEN, "rejected": rejected}])
    (c,) = read_comparisons(path)
    assert c == Comparison(HH_PROMPT, "Knead it.", "Buy it.\n\nHuman: Why?\n\nAssistant: Easier.")
    with pytest.raises(DataError, match=r"hh\.jsonl:1: .*differ before their last Assistant turn"):
        read_comparisons(path, strict_hh=True)


@pytest.mark.parametrize("row, want", [
    ({"prompt": "Once upon", "completion": " a time"}, Demonstration("Once upon", " a time")),
    ({"messages": [m("user", "Hi"), m("assistant", "Hello"), m("user", "Bye"), m("assistant", "Bye!")]},
     Demonstration((U("Hi"), A("Hello"), U("Bye")), "Bye!")),
    ({"prompt": [m("user", "Hi")], "completion": [m("assistant", "Yo")]}, Demonstration((U("Hi"),), "Yo")),
    ({"chosen": HH_CHOSEN, "rejected": HH_REJECTED}, Demonstration(HH_PROMPT, "Knead it.")),
])
def test_demonstration_rows(tmp_path, row, want):
    assert read_demonstrations(write(tmp_path, "d.jsonl", [row])) == [want]


def test_rankings_binary_feedback_prompts_and_preferences(tmp_path):
    ranking = {"prompt": "p", "responses": ["a", "b", "c"], "ranking": [2, 0, 1]}
    assert read_rankings(write(tmp_path, "r.jsonl", [ranking])) == [Ranking("p", ("a", "b", "c"), (2, 0, 1))]
    fb = [{"prompt": "p", "completion": "a", "label": True}, {"prompt": "p", "completion": "", "label": False}]
    want = [BinaryFeedback("p", "a", True), BinaryFeedback("p", "", False)]
    assert read_binary_feedback(write(tmp_path, "b.jsonl", fb)) == want
    prompts = [{"prompt": "Once"}, {"prompt": [m("user", "Hi")]}, {"chosen": HH_CHOSEN}]
    want = [Prompt("Once"), Prompt((U("Hi"),)), Prompt(HH_PROMPT)]
    assert read_prompts(write(tmp_path, "p.jsonl", prompts)) == want
    mixed = read_preferences(write(tmp_path, "m.jsonl", [PAIRS[0], ranking]))
    assert [type(r) for r in mixed] == [Comparison, Ranking]


@pytest.mark.parametrize("name", ["p.txt", "p.txt.gz"])
def test_prompts_txt_one_per_line(tmp_path, name):
    path = write(tmp_path, name, "Once upon a time\n\n  The dog  \r\n")
    assert read_prompts(path) == [Prompt("Once upon a time"), Prompt("The dog")]


@pytest.mark.parametrize("text, want", [
    ("One.\nStill one.\n\n\nTwo.\n  \nThree.", ["One.\nStill one.", "Two.", "Three."]),
    ("Para 1.\n\nPara 2.\n<|endoftext|>\nTwo.<|endoftext|>Three.\n<|endoftext|>\n",
     ["Para 1.\n\nPara 2.", "Two.", "Three."]),
])
def test_documents_txt(tmp_path, text, want):
    want = [Document(t) for t in want]
    assert read_documents(write(tmp_path, "c.txt", text)) == want
    assert read_documents(write(tmp_path, "c.jsonl", [{"text": d.text} for d in want])) == want


# ---- errors -------------------------------------------------------------------------------

PAIR = {"prompt": "p", "chosen": "c", "rejected": "r"}
GOOD = json.dumps(PAIR)
FB = {"prompt": "p", "completion": "c"}
RANK = {"prompt": "p", "responses": ["a", "b", "c"]}


def msgs(*roles):
    return [m(role) for role in roles]


@pytest.mark.parametrize("reader, bad, problem", [
    (read_comparisons, '{"prompt": "p", "chosen": ', "invalid JSON"),
    (read_comparisons, "[1, 2]", "not a JSON object (got array)"),
    (read_comparisons, {"prompt": "p", "chosen": "c"}, 'missing key "rejected"'),
    (read_comparisons, {**PAIR, "prompt": 3}, '"prompt" must be a string or a list of messages, got number'),
    (read_comparisons, {**PAIR, "margin": "big"}, '"margin" must be a finite number, got string'),
    (read_comparisons, {**PAIR, "prompt": "   "}, '"prompt" is whitespace only'),
    (read_comparisons, {"chosen": "\n\nHuman: hi", "rejected": "\n\nHuman: hi"}, "no Assistant turn"),
    (read_comparisons, {"chosen": "hello", "rejected": "bye"}, 'missing key "prompt"'),
    (read_comparisons, {**RANK, "ranking": [0, 1, 2]}, "looks like a ranking row"),
    (read_comparisons, {**PAIR, "prompt": msgs("user"), "chosen": msgs("assistant", "assistant")},
     "one assistant message, got array of 2 items"),
    (read_binary_feedback, {**FB, "label": "yes"}, '"label" must be true or false, got string'),
    (read_binary_feedback, {**FB, "label": 1}, '"label" must be true or false, got number'),
    (read_rankings, {**RANK, "ranking": [0, 0, 2]}, "is not a permutation"),
    (read_rankings, {**RANK, "responses": ["a"], "ranking": [0]}, "at least 2 responses"),
    (read_demonstrations, {"messages": msgs("user", "bot")}, "invalid role 'bot'"),
    (read_demonstrations, {"messages": msgs("user", "assistant", "user")}, "must be an assistant turn"),
    (read_demonstrations, {"messages": [m("user", ""), m("assistant")]}, "has empty content"),
    (read_demonstrations, {"prompt": msgs("user", "assistant"), "completion": "c"}, "must end with a user turn"),
    (read_documents, {"text": ""}, '"text" is empty'),
    (read_prompts, {"prompt": None}, '"prompt" is null'),
])
def test_row_errors_name_file_line_and_problem(tmp_path, reader, bad, problem):
    # Line 3, after a good row (or a blank line) and a blank line: blank lines are not rows, but they count.
    lines = [GOOD if reader is read_comparisons else "", "", bad if isinstance(bad, str) else json.dumps(bad)]
    path = write(tmp_path, "rows.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        reader(path)
    assert str(e.value).startswith(f"{path}:3: ") and problem in str(e.value)
    assert e.value.place == 3 and problem in e.value.problem


def test_bytes_that_are_not_utf8_name_the_line(tmp_path):
    path = write(tmp_path, "u.jsonl.gz", GOOD.encode() + b'\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"u\.jsonl\.gz:2: not valid UTF-8 \(byte 0xe9"):
        read_comparisons(path)
    path = write(tmp_path, "u.txt", b"Good story.\n\nBad \xff story\ngoes on.\n")
    with pytest.raises(DataError, match=r"u\.txt:3: not valid UTF-8"):
        read_documents(path)


@pytest.mark.parametrize("name, content, problem", [
    ("empty.jsonl", "\n  \n", "empty.jsonl: no rows"),
    ("empty.json", "[]", "empty.json: no rows"),
    ("empty.txt", "\n", "empty.txt: no rows"),
    ("broken.json", '[\n {"prompt": "p"},\n {"prompt" "q"}\n]', "broken.json:3: invalid JSON"),
    ("object.json", '{"prompt": "p"}', "object.json:1: invalid JSON: a .json file must hold an array"),
    ("broken.jsonl.gz", "not gzip", "broken.jsonl.gz: not a valid gzip file"),
    ("data.csv", "prompt\n", "data.csv: unknown file type .csv; accepted: .jsonl, .jsonl.gz, .json, .json.gz, .parquet, .txt"),
])
def test_file_errors(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content.encode())
    with pytest.raises(DataError) as e:
        read_prompts(path)
    assert str(e.value).startswith(f"{tmp_path}/{problem}")


def test_txt_is_only_for_documents_and_prompts(tmp_path):
    with pytest.raises(DataError, match=r"unknown file type \.txt; accepted: .*\.parquet, or a directory"):
        read_comparisons(write(tmp_path, "pairs.txt", "a\n"))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="data file not found: .*nope.jsonl"):
        read_comparisons(tmp_path / "nope.jsonl")


def test_skip_bad_rows_drops_and_counts(tmp_path, caplog):
    path = write(tmp_path, "s.jsonl", "\n".join([GOOD, "{oops", '{"prompt": "p"}', GOOD]))
    with caplog.at_level(logging.WARNING, logger="rlhf.data.formats"):
        records = read_comparisons(path, skip_bad_rows=True)
    assert len(records) == 2 and records.skipped == 2
    assert [e.place for e in records.errors] == [2, 3]
    assert "skipped 2 bad rows" in caplog.text and "s.jsonl:2: invalid JSON" in caplog.text
    with pytest.raises(DataError, match=r"no rows \(1 bad row skipped\)"):
        read_comparisons(write(tmp_path, "t.jsonl", "{oops\n"), skip_bad_rows=True)


# ---- real data: tests/assets and the package's own TinyStories --------------------------------


def test_real_hh_dev():
    pairs = read_comparisons(HH / "harmless-dev.jsonl.gz")
    assert len(pairs) == 200
    for c in pairs:
        assert isinstance(c.prompt, tuple) and all(isinstance(msg, Message) for msg in c.prompt)
        assert c.prompt[-1].role == "user" and c.chosen.strip() and c.rejected.strip()
    assert read_comparisons(HH / "harmless-dev.jsonl.gz", strict_hh=True) == pairs


def test_real_hh_train_divergent_pairs():
    path = HH / "harmless-train-sample.jsonl.gz"  # 208 train pairs, with every quirk of the 1,800 (PROVENANCE.md)
    pairs, demos = read_comparisons(path), read_demonstrations(path)
    assert len(pairs) == len(demos) == 208
    assert sum(c.chosen == "" for c in pairs) == 4  # silence preferred to a harmful reply: kept
    strict = read_comparisons(path, strict_hh=True, skip_bad_rows=True)
    assert [e.place for e in strict.errors] == [204, 205, 206, 207, 208]  # lines 984, 1317, 1532, 1533, 1593 of the 1,800


def test_real_tinystories():  # the corpus the package ships: stories separated by <|endoftext|> lines
    docs = read_documents(TINYSTORIES)
    assert len(docs) > 1000 and all("<|endoftext|>" not in d.text and d.text.strip() for d in docs)
