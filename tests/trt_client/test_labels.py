"""Class names: read from the served model's config by both clients, and given to class indices."""
from __future__ import annotations

import numpy as np
import pytest

from client_harness import CLASS_NAMES
from trt_client import labels
from trt_client.errors import TrtClientError

THREE = b"1 0.9 0 0 10 10\n2 0.2 1 1 2 2\n7 0.6 5 5 20 20\n"  # class score x1 y1 x2 y2; class 7 has no name


def test_the_class_names_parameter_names_the_classes_of_a_result(clients, echo_server):
    runner = clients.open(echo_server.grpc_url, "detector")
    assert runner.class_names == tuple(CLASS_NAMES)
    results = runner.run(input={"data": THREE})
    assert results["classes"].dtype == np.int32 and results["classes"].tolist() == [[1, 2, 7, 0, 0]]
    assert runner.names_of(results["classes"]).tolist() == [["dog", "bird", "7", "cat", "cat"]]


def test_a_label_file_is_named_but_not_served_so_classes_stay_indices(clients, echo_server):
    runner = clients.open(echo_server.grpc_url, "detector-labels")
    assert runner.class_names is None and runner.spec.label_files == {"classes": "labels.txt"}
    results = runner.run(input={"data": THREE})
    assert runner.names_of(results["classes"]).tolist() == [["1", "2", "7", "0", "0"]]


def test_a_model_without_names_has_none(clients, echo_server):
    runner = clients.open(echo_server.grpc_url, "echo")
    assert runner.class_names is None and runner.spec.label_files == {}


@pytest.mark.parametrize("value", ["cat,dog", '{"0": "cat"}', '["cat", 1]', ""])
def test_a_malformed_parameter_says_what_it_must_be(value):
    with pytest.raises(TrtClientError, match=r"'class_names' parameter must be a JSON list of strings"):
        labels.from_parameters("detector", {"class_names": value})


def test_class_indices_become_names_and_non_integers_are_refused():
    assert labels.name_classes(np.array([[0.0, 2.0, -1.0]]), ["a", "b", "c"]).tolist() == [["a", "c", "-1"]]
    assert labels.name_classes([], ["a"]).shape == (0,)
    with pytest.raises(ValueError, match="class indices must be integers"):
        labels.name_classes(np.array([0.5]), ["a"])
