"""Sim(3) pose graph: keyframe poses corrected by relative similarity constraints (pypose).

A node is a keyframe's pose `world_T_kf` as a similarity (rotation, translation, scale);
an edge says what the similarity `first_T_second` between two nodes should be. The
residual of an edge is the Sim(3) logarithm (7,) of `measured^-1 first^-1 second`; the
nodes that are not fixed are moved by Levenberg-Marquardt until the residuals balance.
Monocular drift in rotation, translation and scale spreads this way along a loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pypose as pp
import torch


@dataclass
class PoseGraphConfig:
    """iterations: Levenberg-Marquardt steps at most; relative_tolerance: stop when the cost
    drops by less than this fraction of itself in a step."""

    iterations: int = 20
    relative_tolerance: float = 1e-8


@dataclass
class SimilarityEdge:
    """A constraint `first_T_second_44` (4, 4) = [[s R, t], [0, 1]] between the nodes at
    indices `first` and `second`."""

    first: int
    second: int
    first_T_second_44: np.ndarray


def similarity_44(R_33: np.ndarray, t_3: np.ndarray, scale: float) -> np.ndarray:
    """The 4x4 matrix of x -> scale R x + t."""
    matrix_44 = np.eye(4)
    matrix_44[:3, :3] = scale * R_33
    matrix_44[:3, 3] = t_3
    return matrix_44


def scale_of(similarity_44: np.ndarray) -> float:
    """The scale of a 4x4 similarity matrix."""
    return float(np.cbrt(np.linalg.det(similarity_44[:3, :3])))


class _Graph(torch.nn.Module):
    def __init__(self, world_T_node_n8: pp.LieTensor, free_n: torch.Tensor, edges: list[SimilarityEdge]):
        super().__init__()
        self.free_n = free_n
        self.fixed = world_T_node_n8[~free_n].clone()
        self.nodes = pp.Parameter(world_T_node_n8[free_n].clone())
        self.first_e = torch.tensor([edge.first for edge in edges])
        self.second_e = torch.tensor([edge.second for edge in edges])
        measured_e44 = torch.from_numpy(np.stack([edge.first_T_second_44 for edge in edges]))
        self.measured_inv_e8 = pp.mat2Sim3(measured_e44, check=False).Inv()

    def world_T_node_n8(self) -> pp.LieTensor:
        nodes = torch.empty(len(self.free_n), 8, dtype=torch.float64)
        nodes[self.free_n] = self.nodes.tensor()
        nodes[~self.free_n] = self.fixed.tensor()
        return pp.Sim3(nodes)

    def forward(self, _: torch.Tensor) -> torch.Tensor:
        nodes = self.world_T_node_n8()
        return (self.measured_inv_e8 * nodes[self.first_e].Inv() * nodes[self.second_e]).Log().tensor()


def optimise_pose_graph(
    world_T_node_n44: np.ndarray, edges: list[SimilarityEdge], fixed_n: np.ndarray, config: PoseGraphConfig | None = None
) -> np.ndarray:
    """Corrected poses (N, 4, 4) of nodes `world_T_node_n44` (N, 4, 4) (similarities; rigid
    poses are similarities of scale 1) under the edges; nodes where `fixed_n` (N,) is True
    stay where they are (at least one must, to hold the gauge)."""
    config = config or PoseGraphConfig()
    if not np.any(fixed_n):
        raise ValueError("optimise_pose_graph: at least one node must be fixed")
    if not edges:
        return world_T_node_n44.copy()
    nodes_n8 = pp.mat2Sim3(torch.from_numpy(np.ascontiguousarray(world_T_node_n44, dtype=np.float64)), check=False)
    graph = _Graph(nodes_n8, torch.from_numpy(~np.asarray(fixed_n, dtype=bool)), edges)
    optimiser = pp.optim.LM(graph, strategy=pp.optim.strategy.TrustRegion(radius=1e4), vectorize=True)
    dummy = torch.zeros(1, dtype=torch.float64)
    with torch.no_grad():
        cost = float(graph(dummy).square().sum())
    for _ in range(config.iterations):
        new_cost = float(optimiser.step(dummy))
        if cost - new_cost <= config.relative_tolerance * cost:
            break
        cost = new_cost
    with torch.no_grad():
        return graph.world_T_node_n8().matrix().numpy()
