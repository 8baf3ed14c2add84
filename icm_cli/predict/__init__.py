"""From reference context and source features to object probabilities and masks."""

from icm_cli.config import DEFAULT_DECODER  # noqa: F401  (declared once, in config; re-exported here)
