"""examples/quickstart.ipynb runs from top to bottom (SFT, DPO on a list of dicts, evaluation, a plot)."""

from __future__ import annotations

import base64
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def test_quickstart_notebook_runs_and_draws_its_plot(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("RLHF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "reward accuracy on held-out pairs:" in text and "win rate of DPO over SFT" in text
    images = [o["data"]["image/png"] for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1 and base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "runs" / "quickstart" / "curves.png").stat().st_size > 10_000
    for stage in ("sft", "dpo"):
        assert (tmp_path / "runs" / "quickstart" / stage / "model" / "model.safetensors").exists()
