"""Data shipped inside the package (see each folder's PROVENANCE.md)."""

from pathlib import Path

RESOURCES = Path(__file__).parent
TINYSTORIES_TRAIN = RESOURCES / "tinystories" / "train.txt.gz"
TINYSTORIES_VALIDATION = RESOURCES / "tinystories" / "validation.txt.gz"
BASE_MODEL = RESOURCES / "base"  # `rlhf pretrain --preset small`, stored in bf16 (see base/PROVENANCE.md)
