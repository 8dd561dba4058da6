"""Interactive 3D views of scans, superpoints, features and predictions, as self-contained HTML pages.

    >>> from largead.viewer import view
    >>> view("000000.bin", "view.html", model="largead/minkunet34-seem-nkw")        # doctest: +SKIP
    >>> view(dataset="semantickitti", root="/data/SemanticKITTI/dataset", split="val", index=0, frames=3,
    ...      model="outputs/ft1/model", out="seq.html")                              # doctest: +SKIP

- :mod:`.prepare`: inputs (scan files, dataset frames, models) and per-point data (features, superpoints, segments,
  projections), compact storage.
- :mod:`.scene`: everything the page draws, as JSON metadata plus typed arrays (:class:`ViewData`).
- :mod:`.html`: the page, with the vendored three.js inlined (``assets/``).
- :mod:`.serve`: a local HTTP server for ``largead view --serve``.
"""

from largead.viewer.api import prepare_view, view, write_view
from largead.viewer.scene import ViewData, ViewOptions, build_view

__all__ = ["ViewData", "ViewOptions", "build_view", "prepare_view", "view", "write_view"]
