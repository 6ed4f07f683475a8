"""Model backends behind one protocol (see base.py)."""

from prefsynth.backends.base import Backend, Completion, SamplingParams

__all__ = ["Backend", "Completion", "SamplingParams"]
