"""From reference context and source features to object probabilities and masks."""

# What --decoder and PropagateSettings.decoder default to (here, not in
# decoder.py, so the command line can show it without importing torch).
DEFAULT_DECODER = "auto"
