"""nas: hardware-aware neural architecture search with one weight-sharing supernet.

Imports point one way: `nas` -> `predictors` -> `search_spaces`.
"""

from __future__ import annotations

from nas.finish.package import load_model
from nas.runs.files import load_supernet

__version__ = "0.1.0"
__all__ = ["__version__", "load_model", "load_supernet"]
