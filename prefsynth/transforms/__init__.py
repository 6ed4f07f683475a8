"""Beam PTransforms and DoFns, each a thin shell over a pure, Beam-free core."""
