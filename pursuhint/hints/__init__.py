"""The PURSUhInT method: candidate layers, representations, similarity, clustering, hint sets.

Runs without Ray or MLflow, so it can be called from a notebook or any training code.
"""

from .cluster import CENTERS, CLUSTERINGS, ClusterResult, cluster
from .hintset import (SCHEMA_VERSION, HintSet, default_hints, is_paper_mode, random_hints, select_hints,
                      uniform_hints)
from .layers import CandidateLayer, candidate_layers, tapped_module
from .representations import layer_representations
from .similarity import PAPER_SIMILARITIES, SIMILARITIES, Measure, SimilarityMatrix, similarity_matrix

__all__ = [
    "CENTERS", "CLUSTERINGS", "CandidateLayer", "ClusterResult", "HintSet", "Measure", "PAPER_SIMILARITIES",
    "SCHEMA_VERSION", "SIMILARITIES", "SimilarityMatrix", "candidate_layers", "cluster", "default_hints",
    "is_paper_mode", "layer_representations", "random_hints", "select_hints", "similarity_matrix", "tapped_module",
    "uniform_hints",
]
