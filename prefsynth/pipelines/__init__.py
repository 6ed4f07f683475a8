"""One module per DVC stage: read params, build the Beam pipeline, run it."""
