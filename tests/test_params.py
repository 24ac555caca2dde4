"""Parameters: `-p key=value`, YAML files with their types, layers, Avocado's `get`."""

from __future__ import annotations

import pytest

from mhtest.params import Params, ParamsError, load_yaml, merge, parse_assignment


@pytest.mark.parametrize(
    "text, expected",
    [
        ("size=4", ("size", "4")),
        ("url=http://h/?a=b", ("url", "http://h/?a=b")),
        ("empty=", ("empty", "")),
        (" key =value", ("key", "value")),
        ("list=[1, 2]", ("list", "[1, 2]")),  # strings, as in Avocado
    ],
)
def test_parse_assignment(text, expected):
    assert parse_assignment(text) == expected


@pytest.mark.parametrize("text", ["size", "=4", "", " =x"])
def test_parse_assignment_rejects(text):
    with pytest.raises(ParamsError, match=r"use -p key=value"):
        parse_assignment(text)


def test_yaml_types_are_kept(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "int: 2\nfloat: 0.5\nbool: yes\nnull_value: ~\nlist: [1, two]\n"
        "nested: {a: {b: 3}}\nstring: '4'\n7: numeric key\n"
    )
    data = load_yaml(path)
    assert data == {
        "int": 2,
        "float": 0.5,
        "bool": True,
        "null_value": None,
        "list": [1, "two"],
        "nested": {"a": {"b": 3}},
        "string": "4",
        "7": "numeric key",
    }


def test_empty_yaml_is_no_params(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n")
    assert load_yaml(path) == {}


@pytest.mark.parametrize(
    "content, message",
    [
        (None, r"params file .*missing.yaml does not exist"),
        ("a: [1\n", r"invalid YAML in params file .*p.yaml line 2"),
        ("- a\n", r"must hold a mapping of names to values, not list"),
        ("3\n", r"must hold a mapping of names to values, not int"),
        (b"a: \xff\n", r"is not UTF-8 text"),
        ("!!python/object:os.system x\n", r"invalid YAML in params file"),  # safe_load only
    ],
)
def test_bad_yaml_files(tmp_path, content, message):
    path = tmp_path / ("missing.yaml" if content is None else "p.yaml")
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ParamsError, match=message):
        load_yaml(path)


def test_a_directory_is_not_a_params_file(tmp_path):
    with pytest.raises(ParamsError, match=r"cannot read params file .*: Is a directory"):
        load_yaml(tmp_path)


def test_merge_later_layers_win():
    assert merge({"a": 1, "b": 1}, None, {"b": 2, "c": 2}, {}, {"c": 3}) == {
        "a": 1,
        "b": 2,
        "c": 3,
    }


def test_params_get_the_avocado_way():
    params = Params({"size": 2, "net": {"mtu": 9000}, "mtu": 1500, "none": None})
    assert params.get("size") == 2
    assert params.get("size", default=5) == 2
    assert params.get("missing") is None
    assert params.get("missing", default=5) == 5
    assert params.get("none", default=5) is None  # a present None is a value
    assert params.get("mtu", path="/run/net/*") == 9000
    assert params.get("mtu", path="/run/other/*") == 1500
    assert params.get("mtu") == 1500
    assert params["size"] == 2 and len(params) == 4 and "net" in params
    assert params.to_dict() == {"size": 2, "net": {"mtu": 9000}, "mtu": 1500, "none": None}
    with pytest.raises(KeyError):
        params["missing"]


def test_params_iteritems_and_objects_the_avocado_way():
    params = Params({"size": "4", "nics": "nic1 nic2", "disks": ["a", "b"], "none": None})
    assert list(params.iteritems()) == [
        ("/", "size", "4"),
        ("/", "nics", "nic1 nic2"),
        ("/", "disks", ["a", "b"]),
        ("/", "none", None),
    ]
    assert params.objects("nics") == ["nic1", "nic2"]
    assert params.objects("disks") == ["a", "b"]
    assert params.objects("missing") == [] and params.objects("none") == []
    assert params.get("size", "/run/*", 9) == "4"  # path is the second positional argument
