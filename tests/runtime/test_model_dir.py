"""model/ is written atomically with a completion marker; an unfinished one is refused (issue 11, item 4)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file


@pytest.fixture
def tiny(tiny_model_dir):
    from rlhf.models.load import load_causal_lm, load_tokenizer

    return load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)


def test_save_writes_the_marker_and_leaves_no_temporary_directory(tmp_path, tiny):
    from rlhf.models.load import COMPLETE_MARKER, load_causal_lm, save_pretrained

    (tmp_path / "config.yaml").write_text("lr: 0.1\n")  # a run directory
    save_pretrained(*tiny, tmp_path / "model")
    assert (tmp_path / "model" / COMPLETE_MARKER).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "model"]
    load_causal_lm(tmp_path / "model")


def test_an_interrupted_save_keeps_the_previous_model(tmp_path, tiny, monkeypatch):
    from rlhf.models.load import save_pretrained

    model, tokenizer = tiny
    save_pretrained(model, tokenizer, tmp_path / "model")
    before = load_file(str(tmp_path / "model" / "model.safetensors"))
    with torch.no_grad():
        next(model.parameters()).add_(1.0)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(tokenizer), "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        save_pretrained(model, tokenizer, tmp_path / "model")
    after = load_file(str(tmp_path / "model" / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_run_model_without_its_marker_is_refused(tmp_path, tiny_model_dir):
    from rlhf.models.load import COMPLETE_MARKER, ModelNotFound, load_causal_lm, load_tokenizer

    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "model")
    (run / "config.yaml").write_text("lr: 0.1\n")
    (run / "model" / COMPLETE_MARKER).unlink(missing_ok=True)
    with pytest.raises(ModelNotFound, match="stopped before it finished writing it.*--resume"):
        load_causal_lm(run / "model")
    with pytest.raises(ModelNotFound, match=COMPLETE_MARKER):
        load_tokenizer(run / "model")

    leftover = tmp_path / f".model.tmp-{12345}"
    shutil.copytree(tiny_model_dir, leftover)
    with pytest.raises(ModelNotFound, match="interrupted"):
        load_causal_lm(leftover)


def test_a_plain_hugging_face_directory_loads_without_a_marker(tmp_path, tiny_model_dir):
    from rlhf.models.load import COMPLETE_MARKER, load_causal_lm

    for where in (tmp_path / "gpt2", tmp_path / "downloads" / "model"):  # no config.yaml beside it: not a run
        shutil.copytree(tiny_model_dir, where)
        (where / COMPLETE_MARKER).unlink(missing_ok=True)
        model = load_causal_lm(where)
        weights, state = load_file(str(where / "model.safetensors")), model.state_dict()
        assert weights and set(weights) <= set(state)  # the file's tensors (a tied lm_head may be left out)
        assert [name for name, tensor in weights.items() if not torch.equal(state[name], tensor)] == []
        config, loaded = json.loads((where / "config.json").read_text()), model.config.to_dict()
        assert {name: loaded.get(name) for name in config} == config  # every entry of config.json, as written
