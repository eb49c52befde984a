"""robench.benchmark: datasets, threat models, attacks, the protocol and the evaluation runner."""
__version__ = "0.1.0"
