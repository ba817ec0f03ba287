"""`nas space show`: a search space fitted to the data, printed as a space file to start one's own from."""

from __future__ import annotations

import argparse
import json
from typing import Any

from nas.data.datasets import load_data
from search_spaces import SearchSpace, get_family, get_space


def fitted_space(space: str, data: str | None) -> SearchSpace:
    """`--space` fitted to `--data` (`search_spaces.fit`); without data, as written."""
    if data is None:
        return get_space(space)
    family = get_family(space)
    return SearchSpace(family.fit(load_data(data, dims=family.dims).shape))


def cmd_space(args: argparse.Namespace) -> None:
    """Print the space fitted to --data (without it: as written) as JSON, loadable as a space file."""
    if args.data is None:
        shown = get_family(args.space).as_written()
    else:
        shown = fitted_space(args.space, args.data).config.to_dict()
    print(space_json(shown))


def space_json(space: dict[str, Any]) -> str:
    """A space as a JSON object: a field per line, a stage per line."""
    def value(key: str, v: Any) -> str:
        if key == "stages":
            return "[\n" + ",\n".join(f"    {json.dumps(stage)}" for stage in v) + "\n  ]"
        return json.dumps(v)
    return "{\n" + ",\n".join(f"  {json.dumps(k)}: {value(k, v)}" for k, v in space.items()) + "\n}"
