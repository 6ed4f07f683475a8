"""prefsynth: synthetic preference and critique datasets, built with Beam, versioned with DVC, trained with TRL."""

__version__ = "0.1.0"
