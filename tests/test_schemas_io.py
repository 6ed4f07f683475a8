import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to

from prefsynth.config import BeamConfig
from prefsynth.pipelines.options import pipeline_options
from prefsynth.schemas import SCHEMA_VERSION, SCHEMAS
from prefsynth.schemas.io import ReadDataset, WriteDataset, dataset_files, file_metadata, read_records, records_to_table

SAMPLES = {
    "prompts": {"prompt_id": "p{i}", "split": "train", "task": "arith", "prompt": "Q: 1+{i}=?\n",
                "messages": [{"role": "user", "content": "Q: 1+{i}=?\n"}], "question": "1+{i}",
                "reference_answer": "3", "reference_solution": "1+2=3\nA: 3\n", "source": "arith:{i}",
                "metadata": "{{}}"},
    "responses": {"response_id": "r{i}", "prompt_id": "p{i}", "policy": "policy-0", "iteration": 0,
                  "sample_index": 1, "text": "1+2=3\nA: 3\n", "steps": ["1+2=3", "A: 3"], "final_answer": "3",
                  "n_tokens": 11, "sum_logprob": -1.5, "mean_logprob": -0.14, "self_certainty": 2.0,
                  "finish_reason": "stop", "truncated_prompt": False, "source": "transformers"},
    "tree_nodes": {"node_id": "n{i}", "tree_id": "t", "prompt_id": "p{i}", "parent_id": None, "depth": 0,
                   "step_text": "1+2=3", "prior": 0.5, "visits": 3, "q": 0.1, "value": 0.2, "reward": 1.0,
                   "terminal": False, "final_answer": None, "verified_correct": True},
    "labels": {"label_id": "l{i}", "target_id": "r{i}", "target_kind": "step", "step_index": 1,
               "labeler": "verifier", "score": 1.0, "label": "correct", "confidence": 1.0,
               "rationale": None, "raw_output": None, "other_id": None},
    "critiques": {"critique_id": "c{i}", "response_id": "r{i}", "prompt_id": "p{i}", "task": "arith",
                  "critic": "rule", "critic_model": None, "problem": "Q: 1+2*3=?\n", "steps": ["1+2=3", "3*3=10"],
                  "critic_prompt": "Problem: 1+2*3", "critique": "Step 2 is wrong: 3*3 is 9, not 10.\nVerdict: step 2",
                  "predicted_first_wrong_step": 1, "true_first_wrong_step": 1, "truth_known": True,
                  "located_correctly": True, "raw_output": None},
    "pairs_conversational": {"pair_id": "x{i}", "prompt_id": "p{i}", "level": "response",
                             "prompt": [{"role": "user", "content": "Q {i}"}],
                             "chosen": [{"role": "assistant", "content": "a"}],
                             "rejected": [{"role": "assistant", "content": "b"}],
                             "weight": 1.0, "label_source": "verifier"},
    "pairs": {"pair_id": "x{i}", "prompt_id": "p{i}", "level": "step", "prompt": "Q", "chosen": "a",
              "rejected": "b", "chosen_id": "r1", "rejected_id": "r2", "chosen_score": 1.0,
              "rejected_score": 0.0, "margin": 1.0, "uncertainty_mean": 0.5, "uncertainty_var": 0.1,
              "uncertainty_bald": 0.05, "weight": 1.0, "label_source": "verifier", "kept_reason": "top-bottom"},
    "kto": {"example_id": "k{i}", "prompt_id": "p{i}", "prompt": "Q", "completion": "1+2=3", "label": True,
            "source_id": "r{i}", "label_source": "verifier"},
    "prm": {"example_id": "m{i}", "prompt_id": "p{i}", "prompt": "Q", "completions": ["1+2=3", "A: 3"],
            "labels": [True, True], "source_id": "r{i}", "label_source": "verifier_arith"},
    "dead_letters": {"stage": "prompts", "record_id": "f.jsonl:{i}", "error_type": "invalid_json",
                     "message": "bad", "raw_input": "{{", "raw_output": None},
}


def _fill(template: dict, i: int) -> dict:
    return {k: (v.format(i=i) if isinstance(v, str) else
                [{kk: vv.format(i=i) for kk, vv in m.items()} if isinstance(m, dict) else m for m in v]
                if isinstance(v, list) else v) for k, v in template.items()}



def test_every_dataset_has_a_schema_sample():
    assert set(SAMPLES) == set(SCHEMAS)


@pytest.mark.parametrize("dataset", sorted(SCHEMAS))
def test_round_trip_through_beam(tmp_path, dataset):
    records = [_fill(SAMPLES[dataset], i) for i in range(25)]
    out = str(tmp_path / dataset)
    with beam.Pipeline(options=pipeline_options(BeamConfig())) as p:
        _ = p | beam.Create(records) | WriteDataset(out, dataset, "test", num_shards=3)
    files = dataset_files(out)
    assert [f.rsplit("/", 1)[1] for f in files] == [f"part-0000{i}-of-00003.parquet" for i in range(3)]
    meta = file_metadata(files[0])
    assert meta["prefsynth.schema_version"] == SCHEMA_VERSION
    assert meta["prefsynth.dataset"] == dataset and meta["prefsynth.stage"] == "test"
    assert meta["prefsynth.producer"].startswith("prefsynth ")
    assert pq.read_schema(files[0]).remove_metadata() == SCHEMAS[dataset]
    back = read_records(out)
    key = lambda r: sorted((k, str(v)) for k, v in r.items())
    assert sorted(back, key=key) == sorted(records, key=key)

    # and Beam reads it back too
    with beam.Pipeline(options=pipeline_options(BeamConfig())) as p:
        n = p | ReadDataset(out) | beam.combiners.Count.Globally()
        assert_that(n, equal_to([25]))


def test_shards_do_not_depend_on_input_order(tmp_path):
    records = [_fill(SAMPLES["labels"], i) for i in range(40)]
    outs = []
    for name, recs in (("a", records), ("b", list(reversed(records)))):
        out = str(tmp_path / name)
        with beam.Pipeline(options=pipeline_options(BeamConfig())) as p:
            _ = p | beam.Create(recs, reshuffle=True) | WriteDataset(out, "labels", "test", num_shards=2)
        outs.append([open(f, "rb").read() for f in dataset_files(out)])
    assert outs[0] == outs[1]


def test_empty_shards_are_still_written(tmp_path):
    out = str(tmp_path / "few")
    with beam.Pipeline(options=pipeline_options(BeamConfig())) as p:
        _ = p | beam.Create([_fill(SAMPLES["pairs"], 0)]) | WriteDataset(out, "pairs", "test", num_shards=4)
    files = dataset_files(out)
    assert len(files) == 4
    assert sum(pq.read_metadata(f).num_rows for f in files) == 1


def test_schema_mismatch_names_the_record():
    bad = _fill(SAMPLES["responses"], 3)
    bad["n_tokens"] = "eleven"
    with pytest.raises(ValueError, match=r"responses record \('r3',\)"):
        records_to_table([_fill(SAMPLES["responses"], 1), bad], "responses", "test")
