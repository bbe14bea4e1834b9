"""Reading features, predictions and scores out of KServe v1, Open Inference v2 and plain JSON."""

import json
from typing import Any

import pytest

from driftline_sidecar.contract.config import FeatureConfig, PredictionConfig
from driftline_sidecar.protocols import Extracted, Extractor, UnparsableBody, detect, extract

AMOUNT = FeatureConfig(name="amount")
AGE = FeatureConfig(name="age")
COUNTRY = FeatureConfig(name="country", type="categorical")


def run(
    request: Any,
    response: Any = None,
    *,
    features: list[FeatureConfig],
    protocol: str = "auto",
    prediction: PredictionConfig | None = None,
) -> Extracted:
    return extract(
        json.dumps(request).encode(),
        None if response is None else json.dumps(response).encode(),
        protocol=protocol,  # type: ignore[arg-type]
        features=features,
        prediction=prediction or PredictionConfig(),
    )


def tensor(name: str, shape: list[int], data: Any, datatype: str = "FP32") -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


# ---------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("request_body", "expected"),
    [
        ({"instances": [[1, 2]]}, "kserve-v1"),
        ({"inputs": [[1, 2]]}, "kserve-v1"),
        ({"inputs": [{"amount": 1}]}, "kserve-v1"),
        ({"inputs": [tensor("x", [1, 2], [1, 2])]}, "open-inference-v2"),
        ({"amount": 1}, "json"),
        ({"inputs": "text"}, "json"),
        ([{"amount": 1}], "json"),
        (3, "json"),
    ],
)
def test_detect(request_body: Any, expected: str) -> None:
    assert detect(request_body) == expected


def test_auto_reports_the_protocol_it_used() -> None:
    assert run({"instances": [[1]]}, features=[AMOUNT]).protocol == "kserve-v1"
    v2 = {"inputs": [tensor("amount", [1], [1.0])]}
    assert run(v2, features=[AMOUNT]).protocol == "open-inference-v2"
    assert run({"amount": 1}, features=[AMOUNT]).protocol == "json"


# ---------------------------------------------------------------- KServe v1


def test_kserve_v1_single_list_row_by_position() -> None:
    got = run({"instances": [[12.5, 40, "DE"]]}, {"predictions": [1]},
              features=[AMOUNT, AGE, COUNTRY])  # fmt: skip

    assert got.rows == 1
    assert got.features == {"amount": [12.5], "age": [40], "country": ["DE"]}
    assert got.predictions == [1]
    assert got.scores == [None]
    assert (got.unknown_fields, got.wrong_type, got.missing_fields) == (0, 0, 0)


def test_kserve_v1_batched_list_rows_by_column_index() -> None:
    features = [FeatureConfig(name="amount", path="2"), FeatureConfig(name="age", path="0")]
    got = run({"instances": [[40, "x", 12.5], [30, "y", 99.0]]}, {"predictions": [0, 1]},
              features=features)  # fmt: skip

    assert got.rows == 2
    assert got.features == {"amount": [12.5, 99.0], "age": [40, 30]}
    assert got.predictions == [0, 1]
    assert got.unknown_fields == 2  # column 1 in each of two rows


def test_kserve_v1_ragged_list_rows_count_missing_and_unknown() -> None:
    got = run({"instances": [[1, 2, 3, 4], [5]]}, features=[AMOUNT, AGE])

    assert got.features == {"amount": [1, 5], "age": [2, None]}
    assert got.missing_fields == 1
    assert got.unknown_fields == 2  # columns 2 and 3 of the first row


def test_kserve_v1_inputs_alias_and_scalar_rows() -> None:
    got = run({"inputs": [3.5, 4.5]}, {"predictions": [0.1, 0.2]}, features=[AMOUNT],
              protocol="kserve-v1")  # fmt: skip

    assert got.features == {"amount": [3.5, 4.5]}
    assert got.predictions == [0.1, 0.2]


def test_kserve_v1_object_rows_with_nested_paths() -> None:
    features = [AMOUNT, FeatureConfig(name="country", path="user.address.country",
                                      type="categorical")]  # fmt: skip
    rows = [
        {"amount": 10, "user": {"address": {"country": "DE", "zip": "10115"}, "id": 7}},
        {"amount": 20, "user": {"address": {"country": "FR"}}},
    ]
    got = run({"instances": rows}, features=features)

    assert got.features == {"amount": [10, 20], "country": ["DE", "FR"]}
    assert got.unknown_fields == 2  # user.address.zip and user.id
    assert got.predictions == [None, None]  # no response given


def test_kserve_v1_instances_mixing_objects_and_arrays_are_unparsable() -> None:
    with pytest.raises(UnparsableBody, match="mix objects"):
        run({"instances": [{"amount": 1}, [1]]}, features=[AMOUNT])


def test_kserve_v1_probabilities_give_argmax_and_max() -> None:
    got = run({"instances": [[1], [2]]}, {"predictions": [[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]]},
              features=[AMOUNT])  # fmt: skip

    assert got.predictions == [1, 0]
    assert got.scores == [0.7, 0.6]


def test_kserve_v1_probabilities_with_a_score_column() -> None:
    got = run({"instances": [[1], [2]]}, {"predictions": [[0.9, 0.1], [0.2, 0.8]]},
              features=[AMOUNT], prediction=PredictionConfig(score="1"))  # fmt: skip

    assert got.predictions == [0, 1]
    assert got.scores == [0.1, 0.8]


def test_kserve_v1_single_value_lists_are_the_value() -> None:
    got = run({"instances": [[1], [2]]}, {"predictions": [[3.5], [4.5]]}, features=[AMOUNT])

    assert got.predictions == [3.5, 4.5]


def test_kserve_v1_object_predictions_use_the_configured_paths() -> None:
    response = {"predictions": [
        {"label": "fraud", "detail": {"p": 0.93}},
        {"label": "ok", "detail": {"p": 0.12}},
    ]}  # fmt: skip
    got = run({"instances": [[1], [2]]}, response, features=[AMOUNT],
              prediction=PredictionConfig(path="label", score="detail.p"))  # fmt: skip

    assert got.predictions == ["fraud", "ok"]
    assert got.scores == [0.93, 0.12]


def test_kserve_v1_response_needs_predictions() -> None:
    with pytest.raises(UnparsableBody, match="kserve-v1 response"):
        run({"instances": [[1]]}, {"outputs": []}, features=[AMOUNT])


# ---------------------------------------------------------------- Open Inference Protocol v2


def test_v2_named_tensors_flat_data_and_bytes() -> None:
    request = {"inputs": [
        tensor("amount", [3], [1.5, 2.5, 3.5]),
        tensor("country", [3, 1], ["DE", "FR", "US"], "BYTES"),
    ]}  # fmt: skip
    response = {"outputs": [tensor("label", [3], [0, 1, 0], "INT64")]}
    got = run(request, response, features=[AMOUNT, COUNTRY])

    assert got.rows == 3
    assert got.features == {"amount": [1.5, 2.5, 3.5], "country": ["DE", "FR", "US"]}
    assert got.predictions == [0, 1, 0]  # the first output by default
    assert got.scores == [None, None, None]


def test_v2_columns_of_one_2d_input_flat_and_nested_agree() -> None:
    features = [FeatureConfig(name="amount", path="2"), FeatureConfig(name="age", path="0")]
    flat = {"inputs": [tensor("x", [2, 3], [40, 1, 12.5, 30, 2, 99.0])]}
    nested = {"inputs": [tensor("x", [2, 3], [[40, 1, 12.5], [30, 2, 99.0]])]}

    for request in (flat, nested):
        got = run(request, features=features)
        assert got.features == {"amount": [12.5, 99.0], "age": [40, 30]}
        assert got.unknown_fields == 2  # column 1, in two rows


def test_v2_features_default_to_their_position_in_a_2d_input() -> None:
    request = {"inputs": [tensor("input-0", [1, 2], [[7.0, 8.0]])]}

    assert run(request, features=[AMOUNT, AGE]).features == {"amount": [7.0], "age": [8.0]}


def test_v2_unreferenced_inputs_count_as_unknown_and_missing_tensors_as_missing() -> None:
    request = {"inputs": [tensor("amount", [2], [1, 2]), tensor("extra", [2], [0, 0]),
                          tensor("more", [2], [0, 0])]}  # fmt: skip
    got = run(request, features=[AMOUNT, COUNTRY])

    assert got.features["country"] == [None, None]
    assert got.missing_fields == 2
    assert got.unknown_fields == 4  # two unreferenced tensors, two rows


def test_v2_scores_from_a_named_output_and_probabilities() -> None:
    request = {"inputs": [tensor("amount", [2], [1, 2])]}
    response = {"outputs": [
        tensor("probabilities", [2, 2], [[0.2, 0.8], [0.9, 0.1]]),
        tensor("label", [2], ["fraud", "ok"], "BYTES"),
        tensor("confidence", [2, 1], [0.8, 0.9]),
    ]}  # fmt: skip

    named = run(request, response, features=[AMOUNT],
                prediction=PredictionConfig(path="label", score="confidence"))  # fmt: skip
    assert named.predictions == ["fraud", "ok"]
    assert named.scores == [0.8, 0.9]

    argmax = run(request, response, features=[AMOUNT],
                 prediction=PredictionConfig(path="probabilities"))  # fmt: skip
    assert argmax.predictions == [1, 0]
    assert argmax.scores == [0.8, 0.9]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2, 3, 4, 5], "needs 6 values, data has 5"),
        ([[1, 2, 3], [4, 5]], "nested data does not match the shape"),
        ([[1, 2], [3, 4], [5, 6]], "nested data does not match the shape"),
        ([[[1], [2], [3]], [[4], [5], [6]]], "nested deeper than the shape"),
    ],
)
def test_v2_data_inconsistent_with_its_shape_is_unparsable(data: Any, message: str) -> None:
    request = {"inputs": [tensor("x", [2, 3], data)]}

    with pytest.raises(UnparsableBody, match=message) as caught:
        run(request, features=[AMOUNT])
    assert "'x'" in str(caught.value) and "[2, 3]" in str(caught.value)


def test_v2_inputs_disagreeing_on_batch_size_are_unparsable() -> None:
    request = {"inputs": [tensor("amount", [2], [1, 2]), tensor("age", [3], [1, 2, 3])]}

    with pytest.raises(UnparsableBody, match="disagree on batch size"):
        run(request, features=[AMOUNT, AGE])


def test_v2_tensor_without_shape_is_unparsable() -> None:
    request = {"inputs": [{"name": "x", "datatype": "FP32", "data": [1]}]}

    with pytest.raises(UnparsableBody, match=r"inputs\[0\] must be an object with a name"):
        run(request, features=[AMOUNT], protocol="open-inference-v2")


# ---------------------------------------------------------------- plain JSON


def test_json_single_object_with_nested_paths() -> None:
    features = [AMOUNT, FeatureConfig(name="country", path="user.country", type="categorical")]
    got = run({"amount": 3.0, "user": {"country": "DE", "name": "x"}, "note": "hi"},
              {"prediction": "ok", "probability": 0.7}, features=features,
              prediction=PredictionConfig(score="probability"))  # fmt: skip

    assert got.protocol == "json"
    assert got.rows == 1
    assert got.features == {"amount": [3.0], "country": ["DE"]}
    assert got.predictions == ["ok"]
    assert got.scores == [0.7]
    assert got.unknown_fields == 2  # user.name and note


def test_json_batch_of_objects_and_a_list_of_scalars_as_response() -> None:
    got = run([{"amount": 1}, {"amount": 2}], [0.25, 0.75], features=[AMOUNT])

    assert got.features == {"amount": [1, 2]}
    assert got.predictions == [0.25, 0.75]


def test_json_list_paths_index_into_arrays() -> None:
    features = [FeatureConfig(name="second", path="values.1")]

    assert run({"values": [5, 6, 7]}, features=features).features == {"second": [6]}


def test_json_array_of_non_objects_is_unparsable() -> None:
    with pytest.raises(UnparsableBody, match=r"array of objects.*holding other values"):
        run([{"amount": 1}, 2], features=[AMOUNT], protocol="json")


# ---------------------------------------------------------------- schema counts


def test_wrong_types_become_none_and_are_counted() -> None:
    rows = [
        {"amount": True, "country": "DE"},  # a boolean is not a number
        {"amount": "12", "country": ["DE"]},  # a string is not a number; a list no category
        {"amount": 7, "country": 49},  # a number is a fine category
        {"amount": None, "country": None},  # null is present but missing: not a violation
    ]
    got = run({"instances": rows}, features=[AMOUNT, COUNTRY])

    assert got.features == {"amount": [None, None, 7, None], "country": ["DE", None, 49, None]}
    assert got.wrong_type == 3
    assert got.missing_fields == 0
    assert got.unknown_fields == 0


def test_missing_fields_are_counted_per_row() -> None:
    got = run({"instances": [{"amount": 1}, {}, {"country": "DE"}]}, features=[AMOUNT, COUNTRY])

    assert got.features == {"amount": [1, None, None], "country": [None, None, "DE"]}
    assert got.missing_fields == 4  # one, two, one


def test_without_configured_features_nothing_is_unknown() -> None:
    got = run({"instances": [{"a": 1, "b": 2}]}, {"predictions": [1]}, features=[])

    assert got.features == {}
    assert got.unknown_fields == 0
    assert got.predictions == [1]


def test_a_configured_parent_path_covers_its_children() -> None:
    features = [FeatureConfig(name="user", type="categorical"),
                FeatureConfig(name="uid", path="user.id")]  # fmt: skip
    got = run({"user": {"id": 3, "name": "x"}}, features=features)

    assert got.unknown_fields == 0
    assert got.features == {"user": [None], "uid": [3]}  # an object is no category
    assert got.wrong_type == 1


# ---------------------------------------------------------------- row counts and bad bodies


def test_response_rows_are_padded_or_cut_to_the_request() -> None:
    short = run({"instances": [[1], [2], [3]]}, {"predictions": [[0.2, 0.8]]}, features=[AMOUNT])
    assert short.predictions == [1, None, None]
    assert short.scores == [0.8, None, None]

    long = run({"instances": [[1]]}, {"predictions": [5, 6, 7]}, features=[AMOUNT])
    assert long.predictions == [5]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "request body is empty"),
        (b"<html>oops</html>", "request body is not JSON"),
        (b'{"amount": ', "request body is not JSON"),
        (b"\xff\xfe{", "request body is not JSON"),
        (b"3", "json request: expected an object or an array of objects, got a number"),
        (b'"text"', "got a string"),
        (b"[" * 100_000 + b"]" * 100_000, "request body is JSON nested too deeply"),
    ],
)
def test_unparsable_requests(body: bytes, message: str) -> None:
    with pytest.raises(UnparsableBody, match=message):
        extract(body, None, protocol="auto", features=[AMOUNT], prediction=PredictionConfig())


def test_an_empty_response_gives_no_predictions() -> None:
    got = extract(b'{"instances": [[1]]}', b"", protocol="auto", features=[AMOUNT],
                  prediction=PredictionConfig())  # fmt: skip

    assert got.features == {"amount": [1]}
    assert got.predictions == [None]


def test_unparsable_response_names_the_response() -> None:
    with pytest.raises(UnparsableBody, match="response body is not JSON"):
        extract(b'{"instances": [[1]]}', b"Internal Server Error", protocol="auto",
                features=[AMOUNT], prediction=PredictionConfig())  # fmt: skip


def test_explicit_protocol_rejects_another_shape() -> None:
    with pytest.raises(UnparsableBody, match=r'kserve-v1 request: expected \{"instances"'):
        run({"amount": 1}, features=[AMOUNT], protocol="kserve-v1")
    with pytest.raises(UnparsableBody, match=r'open-inference-v2 request: expected \{"inputs"'):
        run({"instances": [[1]]}, features=[AMOUNT], protocol="open-inference-v2")


def test_an_extractor_reused_across_requests_gives_the_same_as_extract() -> None:
    extractor = Extractor(protocol="auto", features=[AMOUNT, COUNTRY],
                          prediction=PredictionConfig())  # fmt: skip
    for request in ({"instances": [[1, "DE"]]}, {"amount": 2, "country": "FR"}):
        body = json.dumps(request).encode()
        assert extractor(body, None) == extract(
            body, None, protocol="auto", features=[AMOUNT, COUNTRY], prediction=PredictionConfig()
        )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"amount": NaN}', "nan"),  # Python's json writes these; orjson refuses them
        (b'{"amount": -Infinity}', "-inf"),
        ('{"amount": 2}'.encode("utf-16"), "2"),
        (b'{"amount": 1e400}', "inf"),
    ],
)
def test_json_the_fast_parser_refuses_is_still_read(body: bytes, expected: str) -> None:
    extracted = extract(
        body, None, protocol="json", features=[AMOUNT], prediction=PredictionConfig()
    )
    assert [str(value) for value in extracted.features["amount"]] == [expected]


@pytest.mark.parametrize("body", [b'{"amount": 1', b"\xff{}", b"[" * 100_000])
def test_bodies_neither_parser_reads_are_unparsable(body: bytes) -> None:
    with pytest.raises(UnparsableBody):
        extract(body, None, protocol="json", features=[AMOUNT], prediction=PredictionConfig())
