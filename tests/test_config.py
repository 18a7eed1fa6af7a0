"""Typed stage configs: value coercion (YAML and command line alike), range rules, unknown keys."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tokenweight.config import StageConfig, check_float, check_int, coerce, option


@dataclass
class Toy(StageConfig):
    steps: int = option(3, "steps")
    rate: float = option(0.5, "a rate")
    name: str | None = option(None, "a name")
    sizes: list[int] = option(factory=lambda: [1, 2], help="sizes")
    edges: list[int] | None = option(None, "edges")
    flag: bool = option(False, "a flag")

    def validate(self) -> None:
        check_int(self, "steps", 1)
        check_float(self, "rate", low=0, high=1, high_open=True)


def test_from_dict_coerces_strings_like_yaml_values():
    t = Toy.from_dict({"steps": "7", "rate": "0.25", "sizes": "4, 5,6", "edges": "none", "flag": "yes"})
    assert (t.steps, t.rate, t.sizes, t.edges, t.flag) == (7, 0.25, [4, 5, 6], None, True)
    t = Toy.from_dict({"steps": 7, "sizes": [8], "edges": [0, 3], "name": "none", "flag": False})
    assert (t.steps, t.sizes, t.edges, t.name, t.flag) == (7, [8], [0, 3], None, False)


def test_dashes_and_underscores_are_the_same_name():
    assert Toy.from_dict({"steps": 2}).steps == Toy.from_dict({"steps": "2"}).steps == 2


@pytest.mark.parametrize(
    "values, message",
    [
        ({"stepz": 1}, "unknown option(s) in config: stepz"),
        ({"steps": "two"}, "steps must be an integer, got 'two'"),
        ({"steps": 1.5}, "steps must be an integer, got 1.5"),
        ({"steps": True}, "steps must be an integer, got True"),
        ({"rate": "fast"}, "rate must be a number, got 'fast'"),
        ({"flag": "maybe"}, "flag must be true or false, got 'maybe'"),
        ({"sizes": "1,x"}, "sizes must be an integer, got 'x'"),
    ],
)
def test_bad_values_name_the_field(values, message):
    with pytest.raises(ValueError) as e:
        Toy.from_dict(values)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"steps": 0}, "steps must be an integer >= 1, got 0"),
        ({"rate": 1.0}, "rate must be in [0, 1), got 1.0"),
        ({"rate": float("nan")}, "rate must be in [0, 1), got nan"),
    ],
)
def test_validate_names_field_value_and_range(changes, message):
    with pytest.raises(ValueError) as e:
        Toy(**changes).validate()
    assert str(e.value) == message


def test_coerce_optional_none_and_required_none():
    assert coerce("None", int | None, "x") is None
    with pytest.raises(ValueError, match="x must be set"):
        coerce(None, int, "x")


def test_to_dict_is_json_ready():
    assert Toy(sizes=(3, 4)).to_dict()["sizes"] == [3, 4]
