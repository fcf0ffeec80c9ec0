"""Why a part failed, as its record keeps it: the most anomalous region, the normal patches that region was
compared with, and the nearest enrolled normal image.

A neutral type: the engine makes it (:mod:`serving.engine.explain`), the evidence record keeps it, the API
serves it and the labeling push sends its picture with the task -- so no room imports another for it.

Coordinates: ``cell`` is ``[row, col]`` in the model's patch grid (``grid``); boxes are ``[x, y, w, h]`` in
the engine's input pixels (``input`` = ``[height, width]``), the frame both the part's ROI crop and every
enrolled normal were scored in; ``picture`` boxes are pixels of the rendered side-by-side picture.

>>> Explanation(bundle_version="b", grid=(16, 16), input=(128, 128), peak=(5, 9), peak_value=40.0,
...             region=(0, 8, 16, 8), region_cells=2).patches
[]
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from serving.strict import StrictModel

Box = tuple[int, int, int, int]
#: the panels of the rendered picture, left to right; ``patches`` spans the three patch crops
PANELS = ("overlay", "normal", "patch1", "patch2", "patch3")


class NormalPatch(StrictModel):
    """One of the region's most anomalous patches and the enrolled normal patch it was scored against."""

    rank: int = Field(ge=1, description="1 = the most anomalous of the region")
    cell: tuple[int, int] = Field(description="the part's patch: [row, col] in the patch grid")
    box: Box = Field(description="the part's patch, engine input pixels")
    score: float = Field(description="the anomaly map's mean over the part's patch")
    bank_index: int = Field(ge=0, description="the memory-bank patch the graph matched it to (patch_match)")
    normal_index: int = Field(ge=0, description="which enrolled normal that bank patch came from")
    normal_file: str = Field(description="that normal's file name at enrollment (explain/normals.json)")
    normal_cell: tuple[int, int] = Field(description="where in that normal: [row, col] in the patch grid")
    normal_box: Box = Field(description="the bank patch in the normal, engine input pixels")


class NearestNormal(StrictModel):
    """The enrolled normal image closest to the part."""

    index: int = Field(ge=0)
    file: str
    how: Literal["fingerprint", "best_patch"] = Field(
        description="fingerprint: nearest part fingerprint among the enrolled normals'; best_patch: the normal "
                    "the most anomalous patch was matched in (bundles without fingerprints)")
    distance: float | None = Field(None, description="fingerprint distance (fingerprint only)")


class Explanation(StrictModel):
    """What the station shows and keeps for a FAIL."""

    bundle_version: str
    grid: tuple[int, int] = Field(description="patch grid [rows, cols]")
    input: tuple[int, int] = Field(description="engine input [height, width] in pixels")
    peak: tuple[int, int] = Field(description="[x, y] of the anomaly map's maximum, engine input pixels")
    peak_value: float
    region: Box = Field(description="the most anomalous region: bounding box of its patches")
    region_cells: int = Field(ge=0, description="patches in the region (above the pixel threshold, joined to the peak)")
    patches: list[NormalPatch] = Field([], max_length=3, description="the region's 3 most anomalous patches that "
                                       "matched different bank patches, each with its nearest bank patch")
    nearest: NearestNormal | None = None
    picture: dict[str, Box] = Field({}, description="panel -> box in the rendered picture (see PANELS)")
    note: str = Field("", description="why something is missing (e.g. a model without a memory bank)")
