"""nas: hardware-aware neural architecture search with one weight-sharing supernet.

Imports point one way: `nas` -> `predictors` -> `search_spaces`.
"""

from __future__ import annotations

from nas.runs import load_model, load_supernet

__version__ = "0.1.0"
__all__ = ["load_model", "load_supernet", "__version__"]
