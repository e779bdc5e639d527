"""One frozen dataclass per stage. Each field has a default and a one-line meaning (shown by
`--help`); a YAML file given with `--config` sets fields, command-line flags win over it.
Validation lives in `__post_init__`; a config never rewrites itself.
"""

from .base import TrainConfig, load_yaml, to_yaml
from .feedback import (LabelBackupConfig, LabelExportConfig, LabelImportConfig, LabelInviteConfig, LabelMonitorConfig,
                       LabelRestoreConfig, LabelServeConfig, LabelStatsConfig)
from .iterate import IterateConfig
from .judge import JudgeConfig, JudgeReviseConfig
from .offline import (DPO_BETA, DPO_GAMMA, DPO_LABEL_SMOOTHING, DPOConfig, EvalRMConfig, PretrainConfig,
                      RewardConfig, SFTConfig)
from .online import DemoConfig, EvalPolicyConfig, GenerateConfig, PPOConfig
from .serve import ServeConfig

__all__ = ["TrainConfig", "load_yaml", "to_yaml", "DPO_BETA", "DPO_GAMMA", "DPO_LABEL_SMOOTHING", "DPOConfig",
           "EvalRMConfig", "PretrainConfig", "RewardConfig", "SFTConfig", "DemoConfig", "EvalPolicyConfig",
           "GenerateConfig", "PPOConfig", "LabelServeConfig", "LabelImportConfig", "LabelInviteConfig", "LabelExportConfig", "LabelBackupConfig", "LabelRestoreConfig", "LabelMonitorConfig", "LabelStatsConfig",
           "JudgeConfig", "JudgeReviseConfig", "ServeConfig", "IterateConfig"]
