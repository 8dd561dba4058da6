"""Class lists and raw-id -> training-id maps of the transfer datasets, as data.

Every map sends a raw id to a training id ``0 .. C-1``; ids absent from a map become
:data:`~largead.data.frame.IGNORE_INDEX` (turn a map into a lookup table with
:func:`largead.data.labels.build_lut` and apply it with :func:`largead.data.labels.apply_lut`). The nuScenes and
SemanticKITTI maps live in :mod:`largead.data.labels`. Sources are cited per block; see also
the official repositories cited beside each map.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------------------- Waymo
# Source: waymo-open-dataset protos/segmentation.proto; training map id - 1, 0 (undefined) -> ignore (Pointcept).
WAYMO_RAW_CLASSES = (
    "undefined", "car", "truck", "bus", "other_vehicle", "motorcyclist", "bicyclist", "pedestrian", "sign",
    "traffic_light", "pole", "construction_cone", "bicycle", "motorcycle", "building", "vegetation", "tree_trunk",
    "curb", "road", "lane_marker", "other_ground", "walkable", "sidewalk",
)
WAYMO_CLASSES = WAYMO_RAW_CLASSES[1:]
WAYMO_LEARNING_MAP = {raw: raw - 1 for raw in range(1, 23)}

# ----------------------------------------------------------------------------------------------------- RELLIS-3D
# Source: unmannedlab/RELLIS-3D benchmarks/SalsaNext/.../labels/rellis.yaml. void, dirt, sky, object, asphalt and
# building are not evaluated (-> ignore); the remaining 14 classes keep their yaml order, shifted to 0-based.
RELLIS3D_RAW_CLASSES = {
    0: "void", 1: "dirt", 3: "grass", 4: "tree", 5: "pole", 6: "water", 7: "sky", 8: "vehicle", 9: "object",
    10: "asphalt", 12: "building", 15: "log", 17: "person", 18: "fence", 19: "bush", 23: "concrete", 27: "barrier",
    31: "puddle", 33: "mud", 34: "rubble",
}
RELLIS3D_CLASSES = ("grass", "tree", "pole", "water", "vehicle", "log", "person", "fence", "bush", "concrete",
                    "barrier", "puddle", "mud", "rubble")
RELLIS3D_LEARNING_MAP = {3: 0, 4: 1, 5: 2, 6: 3, 8: 4, 15: 5, 17: 6, 18: 7, 19: 8, 23: 9, 27: 10, 31: 11, 33: 12,
                         34: 13}

# -------------------------------------------------------------------------------------------------- SemanticPOSS
# Source: huixiancheng/CENet config/labels/semantic-poss.yaml (0 = ignore, 1..13) and cosmix-uda semanticposs.yaml
# (the same 13 classes as 0..12). "14 classes" in some papers counts CENet's ignore class 0; 13 are evaluated.
SEMANTICPOSS_CLASSES = ("person", "rider", "car", "trunk", "plants", "traffic-sign", "pole", "trashcan", "building",
                        "cone/stone", "fence", "bike", "ground")
SEMANTICPOSS_LEARNING_MAP = {4: 0, 5: 0, 6: 1, 7: 2, 8: 3, 9: 4, 10: 5, 11: 5, 12: 5, 13: 6, 14: 7, 15: 8, 16: 9,
                             17: 10, 21: 11, 22: 12}

# ------------------------------------------------------------------------------------------------- SemanticSTF
# Source: xiaoaoran/SemanticSTF semanticstf.yaml: ids 1..19 are the SemanticKITTI classes, 0 unlabeled, 20 invalid.
SEMANTICSTF_CLASSES = ("car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist",
                       "motorcyclist", "road", "parking", "sidewalk", "other-ground", "building", "fence",
                       "vegetation", "trunk", "terrain", "pole", "traffic-sign")
SEMANTICSTF_LEARNING_MAP = {raw: raw - 1 for raw in range(1, 20)}
SEMANTICSTF_WEATHERS = ("dense_fog", "light_fog", "snow", "rain")

# ----------------------------------------------------------------------------------------------------- SynLiDAR
# Sources: xiaoaoran/SynLiDAR README (raw ids); cosmix-uda _resources/synlidar_semantickitti.yaml and
# synlidar_semanticposs.yaml; SemanticSTF PointDR/core/datasets/mapping/synlidar.yaml.
SYNLIDAR_RAW_CLASSES = (
    "unlabeled", "car", "pick-up", "truck", "bus", "bicycle", "motorcycle", "other-vehicle", "road", "sidewalk",
    "parking", "other-ground", "female", "male", "kid", "crowd", "bicyclist", "motorcyclist", "building",
    "other-structure", "vegetation", "trunk", "terrain", "traffic-sign", "pole", "traffic-cone", "fence",
    "garbage-can", "electric-box", "table", "chair", "bench", "other-object",
)
SYNLIDAR_TO_SEMANTICKITTI_COSMIX = {1: 0, 5: 1, 6: 2, 3: 3, 4: 4, 7: 4, 12: 5, 13: 5, 14: 5, 16: 6, 17: 7, 8: 8,
                                    10: 9, 9: 10, 11: 11, 18: 12, 26: 13, 20: 14, 21: 15, 22: 16, 24: 17, 23: 18}
"""CoSMix: pick-up (2) and crowd (15) are ignored."""
SYNLIDAR_TO_SEMANTICKITTI_POINTDR = {**SYNLIDAR_TO_SEMANTICKITTI_COSMIX, 2: 3, 15: 5}
"""PointDR: pick-up -> truck, crowd -> person; otherwise identical to CoSMix."""
SYNLIDAR_TO_SEMANTICPOSS = {12: 0, 13: 0, 14: 0, 15: 0, 16: 1, 17: 1, 1: 2, 21: 3, 20: 4, 23: 5, 24: 6, 27: 7,
                            18: 8, 25: 9, 26: 10, 5: 11, 8: 12}
"""CoSMix's SynLiDAR -> SemanticPOSS map onto :data:`SEMANTICPOSS_CLASSES`."""

# ------------------------------------------------------------------------------------------------------- DAPS-3D
# Source: subake/DAPS3D cfgs/label_params.yml: SemanticKITTI raw ids grouped into 4 classes (0 = ignore there).
DAPS3D_CLASSES = ("vehicle", "human", "surface", "obstacle")
DAPS3D_LEARNING_MAP = {
    **{raw: 0 for raw in (10, 11, 13, 15, 16, 18, 20, 252, 256, 257, 258, 259)},
    **{raw: 1 for raw in (30, 31, 32, 253, 254, 255)},
    **{raw: 2 for raw in (40, 44, 48, 49, 60, 72)},
    **{raw: 3 for raw in (50, 51, 70, 71, 80, 81)},
}

# ------------------------------------------------------------------------------------------------------- Synth4D
# Source: saltoricristiano/gipso-sfouda utils/_resources/synthetic.yaml (CARLA semantic tags -> 7 classes).
SYNTH4D_RAW_CLASSES = (
    "noise", "building", "fences", "other", "pedestrian", "pole", "roadlines", "road", "sidewalk", "vegetation",
    "vehicle", "wall", "trafficsign", "sky", "ground", "bridge", "railtrack", "guardrail", "trafficlight", "static",
    "dynamic", "water", "terrain",
)
SYNTH4D_CLASSES = ("vehicle", "pedestrian", "road", "sidewalk", "terrain", "manmade", "vegetation")
SYNTH4D_LEARNING_MAP = {10: 0, 4: 1, 6: 2, 7: 2, 8: 3, 22: 4, 1: 5, 2: 5, 5: 5, 11: 5, 12: 5, 15: 5, 16: 5, 17: 5,
                        9: 6}

# ---------------------------------------------------------------------------------------------------------- Robo3D
# Source: ldkong1205/Robo3D docs/DATA_PREPARE.md and create/. Points added by fog / snow / crosstalk carry these ids.
CORRUPTIONS = ("fog", "wet_ground", "snow", "motion_blur", "beam_missing", "crosstalk", "incomplete_echo",
               "cross_sensor")
SEVERITIES = ("light", "moderate", "heavy")
SEMANTICKITTI_C_ADDED_IDS = {21: "fog", 22: "snow", 23: "crosstalk"}
NUSCENES_C_ADDED_IDS = {41: "fog", 42: "snow", 43: "crosstalk"}
