"""StableIdentity: one face photo -> two word embeddings that put the person into any SD2.1-family model."""

__version__ = "0.1.0"
