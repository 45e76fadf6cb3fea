"""``lightning-seg plan``: a dataset's fingerprint, and the training recipe chosen from it."""
