"""`nas space show`: a search space fitted to the data, printed as a space file to start one's own from."""

from __future__ import annotations

import argparse
import json
from typing import Any

from nas.data.datasets import load_data
from nas.data.kind import space_for_data
from search_spaces import SearchSpace, get_family, get_space

DEFAULT_SPACE = "tiny"  # of `nas profile` without --space or --data


def picked_space(spec: str) -> str | None:
    """The built-in space for the data `spec` (`nas.data.kind.space_for_data`), said in one line;
    None when the data do not tell (loading them then says why)."""
    picked = space_for_data(spec)
    if picked is None:
        return None
    space, kind = picked
    print(f"space {space}: the built-in space for {kind.describe()} (--space to choose another)", flush=True)
    return space


def fitted_space(space: str | None, data: str | None) -> SearchSpace:
    """`--space` fitted to `--data` (`search_spaces.fit`); without data, as written. Without `--space`:
    the built-in space for the data (`picked_space`), without either `DEFAULT_SPACE`."""
    if space is None:
        space = (picked_space(data) if data is not None else None) or DEFAULT_SPACE
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
