"""Responses beside the prompt they answer: the join the label and critiques stages start from."""

from __future__ import annotations

import apache_beam as beam

from prefsynth.schemas.io import ReadDataset


class GroupByPrompt(beam.PTransform):
    """Read prompts and responses -> (prompt_id, {"prompts": [prompt], "responses": [...]})."""

    def __init__(self, prompts_path: str, responses_path: str):
        super().__init__()
        self.prompts_path, self.responses_path = prompts_path, responses_path

    def expand(self, pipeline):
        prompts = (pipeline | "ReadPrompts" >> ReadDataset(self.prompts_path)
                   | "KeyP" >> beam.Map(lambda r: (r["prompt_id"], r)))
        responses = (pipeline | "ReadResponses" >> ReadDataset(self.responses_path)
                     | "KeyR" >> beam.Map(lambda r: (r["prompt_id"], r)))
        return {"prompts": prompts, "responses": responses} | "Join" >> beam.CoGroupByKey()


def responses_with_prompt(element):
    """One grouped prompt -> (response, prompt) per response."""
    _, grouped = element
    prompts = list(grouped["prompts"])
    for resp in grouped["responses"]:
        yield resp, prompts[0]
