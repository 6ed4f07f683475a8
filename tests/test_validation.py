"""Each dataset's expectation suite catches the corruption it is meant to catch, by name."""

import pytest

from prefsynth.schemas.io import records_to_table
from prefsynth.validation import ValidationFailed, validate_table

from test_schemas_io import SAMPLES, _fill


def _table(dataset, n=6, edit=None):
    recs = [_fill(SAMPLES[dataset], i) for i in range(n)]
    if edit:
        edit(recs)
    return records_to_table(recs, dataset, "test")


REFS = {"prompt_id": [f"p{i}" for i in range(6)]}


@pytest.mark.parametrize("dataset", sorted(SAMPLES))
def test_clean_datasets_pass(dataset, tmp_path):
    report = validate_table(_table(dataset), dataset, "test", REFS, str(tmp_path))
    assert report.success and report.n_expectations >= 4 and report.rows == 6


def _dup(recs):
    recs[3]["prompt_id"] = recs[1]["prompt_id"]


def _dangling(recs):
    recs[2]["prompt_id"] = "p-does-not-exist"


def _prob(recs):
    recs[4]["confidence"] = 1.7


def _same(recs):
    recs[0]["rejected"] = recs[0]["chosen"]


def _nan_weight(recs):
    recs[5]["weight"] = float("nan")


def _bad_split(recs):
    recs[0]["split"] = "dev"


@pytest.mark.parametrize("dataset,edit,expect", [
    ("prompts", _dup, "expect_column_values_to_be_unique(prompt_id): 2 of 6 rows, e.g. ['p1', 'p1']"),
    ("responses", _dangling, "expect_column_values_to_be_in_set(prompt_id): 1 of 6 rows, e.g. ['p-does-not-exist']"),
    ("labels", _prob, "expect_column_values_to_be_between(confidence {'min_value': 0.0, 'max_value': 1.0}): 1 of 6 rows, e.g. [1.7]"),
    ("pairs", _same, "expect_column_values_to_be_in_set(chosen_differs {'value_set': [True]}): 1 of 6 rows"),
    ("pairs", _nan_weight, "expect_column_values_to_not_be_null(weight): 1 of 6 rows"),
    ("prompts", _bad_split, "expect_column_values_to_be_in_set(split {'value_set': ['train', 'validation', 'test']}): 1 of 6 rows, e.g. ['dev']"),
])
def test_corruption_fails_with_a_message_naming_it(dataset, edit, expect, tmp_path):
    with pytest.raises(ValidationFailed) as err:
        validate_table(_table(dataset, edit=edit), dataset, "test", REFS, str(tmp_path))
    msg = str(err.value)
    assert expect in msg, msg
    assert f"{tmp_path}/gx/test/index.html" in msg
    assert (tmp_path / "gx" / "test" / "index.html").exists()
