"""Models by Hub id (rlhf.models.hub): a Hugging Face cache built here holds the tiny model under
`rlhf-test/tiny`; with HF_HUB_OFFLINE=1 the CLI and the Python API train from it by name, and the
run's config.yaml names the commit."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "rlhf-test/tiny"


def fill_cache(cache, model_dir, repo: str = REPO, commit: str = COMMIT, weights: bool = True):
    """`model_dir` laid out as huggingface_hub lays out a download: refs/main -> snapshots/<commit>/."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    shutil.copytree(model_dir, snapshot)
    if not weights:
        for f in snapshot.glob("*.safetensors"):
            f.unlink()
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hub(tmp_path, tiny_model_dir, monkeypatch):
    cache = tmp_path / "hf-cache"
    fill_cache(cache, tiny_model_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))  # for the CLI's process
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants  # read at import: this process already has them

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_a_hub_id_resolves_from_the_cache_and_pins_its_commit(hub):
    from rlhf.models.hub import pin_revision
    from rlhf.models.load import load_causal_lm, resolve_model_dir

    assert resolve_model_dir(REPO).name == COMMIT
    assert pin_revision(REPO) == f"{REPO}@{COMMIT}"
    assert pin_revision(f"{REPO}@{COMMIT}") == f"{REPO}@{COMMIT}"
    load_causal_lm(f"{REPO}@{COMMIT}")


def test_a_missing_model_offline_is_one_line_naming_the_download(hub):
    from rlhf.models.load import ModelNotFound, resolve_model_dir

    with pytest.raises(ModelNotFound, match=r"HF_HUB_OFFLINE=1.*hf download other/model") as err:
        resolve_model_dir("other/model")
    assert "\n" not in str(err.value)


def test_a_snapshot_without_safetensors_is_refused(hub, tiny_model_dir):
    from rlhf.models.load import ModelNotFound, resolve_model_dir

    fill_cache(hub, tiny_model_dir, repo="rlhf-test/pickled", weights=False)
    with pytest.raises(ModelNotFound, match="no .safetensors"):
        resolve_model_dir("rlhf-test/pickled")


def test_sft_by_hub_id_from_the_cli_and_python(hub, tmp_path, demonstrations_file, monkeypatch):
    import rlhf

    monkeypatch.setenv("RLHF_CACHE", str(tmp_path / "rlhf-cache"))
    out = tmp_path / "cli"
    done = subprocess.run([sys.executable, "-m", "rlhf", "sft", "--model", REPO, "--data", str(demonstrations_file),
                           "--out", str(out), "--max-steps", "1", "--batch-size", "4", "--max-length", "32",
                           "--no-progress", "--save-every", "0"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load((out / "config.yaml").read_text())["model"] == f"{REPO}@{COMMIT}"

    result = rlhf.sft(model=REPO, data=str(demonstrations_file), out=str(tmp_path / "py"), max_steps=1, batch_size=4,
                      max_length=32, progress=False, save_every=0)
    assert result.config.model == f"{REPO}@{COMMIT}"
    assert yaml.safe_load((result.out / "config.yaml").read_text())["model"] == f"{REPO}@{COMMIT}"


def test_no_network_and_not_cached_is_one_line_not_a_traceback(hub, monkeypatch):
    from huggingface_hub import constants

    from rlhf.models.load import ModelNotFound, resolve_model_dir

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: as without a network
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    with pytest.raises(ModelNotFound, match=r"could not be reached.*hf download other/model") as err:
        resolve_model_dir("other/model")
    assert "\n" not in str(err.value)
