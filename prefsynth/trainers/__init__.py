"""Trainers: TRL trainers with the small additions prefsynth needs."""
