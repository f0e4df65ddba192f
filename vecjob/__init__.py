"""vecjob: batch document vectorisation with an LSTM sequence autoencoder on Ray."""

__version__ = "0.1.0"

# Bumped when an on-disk layout (model dir, vectors dir, index dir) changes incompatibly.
FORMAT_VERSION = 1
