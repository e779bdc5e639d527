import pytest

from rlhf.models.load import ModelNotFound, load_causal_lm, resolve_model_dir


def test_hub_name_fails_offline_with_a_clear_message():
    with pytest.raises(ModelNotFound, match="Hub"):
        resolve_model_dir("meta-llama/Llama-3.2-1B")


def test_missing_directory_and_non_model_directory(tmp_path):
    with pytest.raises(ModelNotFound, match="does not exist"):
        resolve_model_dir(tmp_path / "nope")
    with pytest.raises(ModelNotFound, match="config.json"):
        resolve_model_dir(tmp_path)


def test_saved_default_loads_with_transformers_alone(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "llama"
    assert tokenizer.chat_template and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert load_causal_lm(tiny_model_dir).num_parameters() == model.num_parameters()


def test_disable_dropout_reaches_llama_attention_dropout(tiny_model_dir):
    """Llama's attention dropout is a float the attention layers read, not an nn.Dropout module:
    with it left on, two training-mode forwards differ and PPO's first ratio is not 1."""
    import torch
    from transformers import AutoModelForCausalLM

    from rlhf.models.reward import disable_dropout

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attention_dropout=0.3,
                                                 attn_implementation="eager")
    model.train()
    ids = torch.arange(1, 17).unsqueeze(0)
    torch.manual_seed(0)
    assert not torch.equal(model(ids).logits, model(ids).logits)  # the dropout is really there
    disable_dropout(model)
    assert torch.equal(model(ids).logits, model(ids).logits)


def test_model_loads_and_saves_draw_no_bar(tiny_model_dir, tmp_path, capfd):
    """Issue 27 item 8: transformers' "Loading weights" bar (and "Writing model shards" on save)
    showed on every command; the bars a user asks for (transformers' others, downloads) stay."""
    from rlhf.models.load import load_tokenizer
    from rlhf.runtime.model_dir import save_pretrained

    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.enable_progress_bar()  # as a fresh process has it (another test may have turned it off)
    try:
        capfd.readouterr()
        model = load_causal_lm(tiny_model_dir)
        save_pretrained(model, load_tokenizer(tiny_model_dir), tmp_path / "model")
        err = capfd.readouterr().err
        assert "Loading weights" not in err and "Writing model shards" not in err
        assert transformers_logging.is_progress_bar_enabled()
        other = transformers_logging.tqdm(range(2), desc="other")
        assert not isinstance(other, transformers_logging.EmptyTqdm)
        other.close()
    finally:
        if not was_enabled:
            transformers_logging.disable_progress_bar()
