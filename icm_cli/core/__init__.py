"""The In-Context Matting (ICM, CVPR 2024) correspondence and attention core, as pure tensor code.

No files, no printing, no device choice: every function works on the
device and floating dtype of its inputs, and documents its shapes. Seed
names are kept so readers of the ICM code find their way.

- :mod:`.morphology`: ``dilate``, ``erode``, ``generate_trimap``,
  ``maskpooling``, ``resize_mask``;
- :mod:`.correspondence`: ``compute_correspondence_matrix``, ``roi_tokens``,
  ``InContextCorrespondence``;
- :mod:`.attention`: ``cross_attention_heat``, ``propagate_heat``,
  ``calculate_attention_score``, ``refine_mask_by_attention``,
  ``TrainingFreeAttention``, ``TrainingFreeAttentionBlocks``;
- :mod:`.modules`: the trainable parts (no weights exist for them here).
"""

from .attention import (
    DEFAULT_ITERATIONS,
    DEFAULT_TEMPERATURE,
    SCORE_TYPES,
    TrainingFreeAttention,
    TrainingFreeAttentionBlocks,
    calculate_attention_score,
    cross_attention_heat,
    peak_normalise,
    propagate_heat,
    refine_mask_by_attention,
)
from .correspondence import InContextCorrespondence, compute_correspondence_matrix, l2_normalise, roi_tokens
from .modules import (
    AttentionMapConv,
    ConvBNReLU,
    FusionBlock,
    MultiScaleFeatureFusion,
    OneWayAttentionBlock,
    ProjectedAttention,
    SemiTrainingAttentionBlocks,
    TrainingCrossAttention,
)
from .morphology import dilate, erode, generate_trimap, maskpooling, resize_mask, window_padding
from .results import AttentionResult, CorrespondenceResult, SemiTrainingResult

__all__ = [
    "DEFAULT_ITERATIONS",
    "DEFAULT_TEMPERATURE",
    "SCORE_TYPES",
    "AttentionMapConv",
    "AttentionResult",
    "ConvBNReLU",
    "CorrespondenceResult",
    "FusionBlock",
    "InContextCorrespondence",
    "MultiScaleFeatureFusion",
    "OneWayAttentionBlock",
    "ProjectedAttention",
    "SemiTrainingAttentionBlocks",
    "SemiTrainingResult",
    "TrainingCrossAttention",
    "TrainingFreeAttention",
    "TrainingFreeAttentionBlocks",
    "calculate_attention_score",
    "compute_correspondence_matrix",
    "cross_attention_heat",
    "dilate",
    "erode",
    "generate_trimap",
    "l2_normalise",
    "maskpooling",
    "peak_normalise",
    "propagate_heat",
    "refine_mask_by_attention",
    "resize_mask",
    "roi_tokens",
    "window_padding",
]
