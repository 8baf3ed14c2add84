"""From reference context and source features to object probabilities and masks."""
