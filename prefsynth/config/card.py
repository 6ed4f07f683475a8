"""The card stage."""

from __future__ import annotations

from dataclasses import dataclass

from prefsynth.config.fields import option as _f


@dataclass
class CardConfig:
    license: str = _f("cc-by-4.0", "License of the published dataset (a Hub license id).")
    language: list = _f(["en"], "Languages of the text.")
    pretty_name: str = _f("prefsynth arithmetic preferences", "Title of the dataset card.")
    extra_tags: list = _f([], "More Hub tags beside preference, dpo, synthetic, prefsynth.")
    push: bool = _f(False, "Upload card/ to the Hub (needs repo_id and HF_TOKEN or a login).")
    repo_id: str | None = _f(None, "Hub dataset repo, e.g. your-name/arith-prefs.")
    private: bool = _f(True, "Create the Hub repo as private.")
    round: int = _f(1, "Which round's data (data/round-<n>) the card publishes; usually the last of `iterations`.")
