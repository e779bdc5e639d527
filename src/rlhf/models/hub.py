"""Models by Hugging Face Hub id: `org/name` or `org/name@revision`, fetched once into the
standard Hugging Face cache (`HF_HOME`, `HF_HUB_CACHE`) with `huggingface_hub`, then read offline.

- Safetensors only: a repository without `.safetensors` weights is refused before any weight is
  downloaded (pickled `.bin` weights can run code when loaded), and only the files a model
  directory needs are fetched (config, weights, tokenizer), never code: `--trust-remote-code`
  stays off unless asked, and even then the code comes only with it.
- Pinned: `pin_revision("org/name")` gives `org/name@<commit>`, which the CLI and the Python API
  write into the run's config.yaml, so a rerun reads the same weights.
- Offline: with `HF_HUB_OFFLINE=1` (or no network) a model already in the cache loads; a missing
  one is one line that says what to run where there is a network.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# The files a model directory is made of (no code, no pickled weights).
MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "tokenizer*", "*.jinja"]
CODE_FILES = ["*.py"]
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?(@[\w./-]+)?$")  # org/name, or a legacy name (gpt2)
COMMIT = re.compile(r"^[0-9a-f]{40}$")


class HubModelError(FileNotFoundError):
    """A Hub id that cannot be resolved to a usable local model directory."""


def looks_like_hub_id(name: str) -> bool:
    """`org/name[@revision]` (or a legacy `name` such as gpt2), not a path (no leading `.`, `/` or
    `~`, at most one slash)."""
    text = str(name)
    return bool(HUB_ID.match(text)) and not text.startswith((".", "/", "~"))


def split_revision(name: str) -> tuple[str, str | None]:
    """("org/name", "revision" or None) of `org/name[@revision]`."""
    repo, _, revision = str(name).partition("@")
    return repo, revision or None


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _reachable(timeout: float = 10.0) -> None:
    """One request to the Hub endpoint, no retries: without a network the user hears so at once
    (huggingface_hub's own calls retry a refused connection for about 25 s)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    get_session().head(constants.ENDPOINT, timeout=timeout)


def _check_safetensors(repo: str, revision: str | None) -> None:
    """Refuse, before downloading weights, a repository that holds none in safetensors."""
    from huggingface_hub import HfApi

    files = HfApi().list_repo_files(repo, revision=revision)
    if not any(f.endswith(".safetensors") for f in files):
        kinds = sorted({Path(f).suffix for f in files if Path(f).suffix in (".bin", ".pt", ".pth", ".ckpt")})
        raise HubModelError(f"{repo}: the repository has no .safetensors weights ({', '.join(kinds) or 'none'} "
                            "only); rlhf refuses pickled weights, which can run code when loaded. Convert them "
                            "to safetensors, or pick a revision that has them")


def resolve_hub_model(name: str, trust_remote_code: bool = False) -> Path:
    """The local snapshot directory of Hub id `name` (`org/name[@revision]`), downloading what is
    missing unless offline. Raises HubModelError with what to do."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    repo, revision = split_revision(name)
    patterns = MODEL_FILES + (CODE_FILES if trust_remote_code else [])
    where = f"{repo}@{revision}" if revision else repo
    try:
        path = Path(snapshot_download(repo, revision=revision, allow_patterns=patterns, local_files_only=True))
    except LocalEntryNotFoundError:
        if _offline():
            raise HubModelError(
                f"model {where!r} is neither a local directory nor in the Hugging Face cache, and HF_HUB_OFFLINE=1: "
                f"on a machine with a network run `hf download {repo}"
                f"{' --revision ' + revision if revision else ''}` (same HF_HOME), then run again") from None
        try:
            _reachable()
            _check_safetensors(repo, revision)
            path = Path(snapshot_download(repo, revision=revision, allow_patterns=patterns))
        except (RepositoryNotFoundError, GatedRepoError) as err:
            raise HubModelError(f"model {where!r}: no such local directory, and the Hub says: "
                                f"{str(err).splitlines()[0]} (a private or gated model needs `hf auth login`)") from None
        except RevisionNotFoundError:
            raise HubModelError(f"model {where!r}: the Hub has no revision {revision!r} of {repo}") from None
        except HubModelError:
            raise
        except Exception as err:  # noqa: BLE001 - no network: one line with what to do, not a traceback
            raise HubModelError(
                f"model {where!r} is neither a local directory nor in the Hugging Face cache, and the Hub could not "
                f"be reached ({type(err).__name__}). Where there is a network, run `hf download {repo}` (same "
                "HF_HOME), or pass a local directory") from None
    if not any(path.glob("*.safetensors")):
        raise HubModelError(f"{where}: the cached snapshot {path} holds no .safetensors weights; rlhf refuses "
                            "pickled weights")
    return path


def pin_revision(name: str) -> str:
    """`org/name@<commit>` of a Hub id (after resolving it into the cache); a local path as it is."""
    if not looks_like_hub_id(name) or Path(name).expanduser().exists():
        return name
    repo, revision = split_revision(name)
    if revision and COMMIT.match(revision):
        return name
    commit = resolve_hub_model(name).name  # the cache's snapshots/<commit> directory
    return f"{repo}@{commit}"


def pin_revisions(cfg, fields, is_model=lambda value: True) -> object:
    """`cfg` with every Hub id among `fields` (names of model fields; a tuple field's items too)
    replaced by `org/name@<commit>`, so the run's config.yaml names the exact weights it used.
    `is_model(value)` False leaves a value alone (a registered labeler name such as `oracle`)."""
    import dataclasses

    def pin(value: str) -> str:
        return pin_revision(value) if is_model(value) else value

    changes = {}
    for name in fields:
        value = getattr(cfg, name, None)
        if isinstance(value, str):
            pinned = pin(value)
        elif isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            pinned = tuple(pin(v) for v in value)
        else:
            continue
        if pinned != value:
            changes[name] = pinned
    return dataclasses.replace(cfg, **changes) if changes else cfg
