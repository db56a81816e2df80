"""Iso-surfaces of voxel grids and the PLY/OBJ files they are written to.

:func:`marching_tetrahedra` extracts the surface ``volume = level`` of a scalar grid. It is the
tetrahedral variant (Doi & Koide 1991) of marching cubes (Lorensen & Cline 1987, "Marching
cubes: a high resolution 3D surface construction algorithm"): every grid cube is cut into six
tetrahedra around its main diagonal (the Kuhn triangulation, which matches across neighbouring
cubes, so the surface has no cracks), and each tetrahedron whose corners straddle the level
contributes one triangle (one corner on the other side) or two (two and two). Vertices lie on
grid edges at the linearly interpolated crossing and are shared between triangles (one per
crossed edge). Triangles are oriented counter-clockwise seen from outside (outside = where
``volume < level``), i.e. their normals point out of the solid. No scikit-image needed.

:func:`field_mesh` does this for a fitted :class:`~vantage.eval.voxels.Field`: the surface where
the opacity of one voxel length reaches ``level`` (default 0.5), in world coordinates, with
vertex colours from the RGB grid. :func:`write_ply` / :func:`write_obj` write ASCII files with
per-vertex colours (OBJ's common ``v x y z r g b`` extension).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["Mesh", "marching_tetrahedra", "field_mesh", "write_ply", "write_obj", "write_mesh"]

# cube corner c = x + 2y + 4z; the six tetrahedra of the Kuhn triangulation around the 0-7 diagonal
_CORNERS = [(c & 1, (c >> 1) & 1, (c >> 2) & 1) for c in range(8)]
_TETS = [(0, 1, 3, 7), (0, 3, 2, 7), (0, 2, 6, 7), (0, 6, 4, 7), (0, 4, 5, 7), (0, 5, 1, 7)]


def _case_table() -> dict[int, list[tuple[tuple[int, int], ...]]]:
    """For each of the 16 inside/outside patterns of a tetrahedron (bit k: corner k inside), its
    triangles as triples of crossed edges ``(inside corner, outside corner)``; orientation is fixed later."""
    table = {}
    for case in range(16):
        ins = [k for k in range(4) if case >> k & 1]
        out = [k for k in range(4) if not case >> k & 1]
        if len(ins) in (0, 4):
            table[case] = []
        elif len(ins) == 1:
            table[case] = [tuple((ins[0], b) for b in out)]
        elif len(ins) == 3:
            table[case] = [tuple((a, out[0]) for a in ins)]
        else:  # quad through edges a-c, a-d, b-d, b-c (in this cyclic order)
            (a, b), (c, d) = ins, out
            table[case] = [((a, c), (a, d), (b, d)), ((a, c), (b, d), (b, c))]
    return table


_TABLE = _case_table()


@dataclass
class Mesh:
    """A triangle mesh: ``vertices (V, 3)`` float, ``faces (F, 3)`` long (counter-clockwise seen
    from outside), optional ``colors (V, 3)`` in [0, 1]."""

    vertices: Tensor
    faces: Tensor
    colors: Tensor | None = None

    def __post_init__(self) -> None:
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"Mesh.vertices must be (V, 3), got {tuple(self.vertices.shape)}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"Mesh.faces must be (F, 3), got {tuple(self.faces.shape)}")
        if self.colors is not None and self.colors.shape != self.vertices.shape:
            raise ValueError(f"Mesh.colors must be (V, 3) like the vertices {tuple(self.vertices.shape)}, "
                             f"got {tuple(self.colors.shape)}")


def marching_tetrahedra(volume: Tensor, level: float) -> Mesh:
    """The iso-surface ``volume = level`` of ``volume (Z, Y, X)`` (``[z, y, x]`` indexing).

    Vertices are in grid index units as ``(x, y, z)`` (vertex ``volume[k, j, i]`` at ``(i, j, k)``);
    scale them to world coordinates yourself (or use :func:`field_mesh`). The inside of the
    surface is ``volume > level``.
    """
    if not isinstance(volume, Tensor) or volume.ndim != 3 or min(volume.shape) < 2:
        raise ValueError(f"volume must be a (Z, Y, X) tensor with every side >= 2, got "
                         f"{tuple(volume.shape) if isinstance(volume, Tensor) else type(volume).__name__}")
    vol = volume.detach().double().cpu()
    nz, ny, nx = vol.shape
    flat = vol.reshape(-1)
    inside = flat > level
    k, j, i = torch.meshgrid(torch.arange(nz - 1), torch.arange(ny - 1), torch.arange(nx - 1), indexing="ij")
    base = (k * ny * nx + j * nx + i).reshape(-1)  # (C,) index of corner 0 of each cube
    corner_off = torch.tensor([z * ny * nx + y * nx + x for x, y, z in _CORNERS])
    tri_edges = []  # (T, 3, 2) global vertex ids of the crossed edges, inside vertex first
    for tet in _TETS:
        ids = base[:, None] + corner_off[list(tet)]  # (C, 4)
        case = (inside[ids].long() * torch.tensor([1, 2, 4, 8])).sum(1)
        for c in range(1, 15):
            sel = ids[case == c]
            if sel.numel() == 0:
                continue
            for tri in _TABLE[c]:
                tri_edges.append(torch.stack([torch.stack([sel[:, a], sel[:, b]], 1) for a, b in tri], 1))
    if not tri_edges:
        return Mesh(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long))
    edges = torch.cat(tri_edges)  # (T, 3, 2)
    n_vert = flat.numel()
    key = edges[..., 0] * n_vert + edges[..., 1]
    uniq, inv = torch.unique(key.reshape(-1), return_inverse=True)
    va, vb = uniq // n_vert, uniq % n_vert
    fa, fb = flat[va], flat[vb]
    t = ((level - fa) / (fb - fa)).clamp(0, 1)

    def coords(v: Tensor) -> Tensor:
        return torch.stack([v % nx, (v // nx) % ny, v // (ny * nx)], 1).double()

    verts = coords(va) + t[:, None] * (coords(vb) - coords(va))
    faces = inv.reshape(-1, 3)
    # orient: the normal must point from the inside corners towards the outside ones
    p = verts[faces]
    normal = torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], dim=1)
    outward = (coords(edges[..., 1].reshape(-1)) - coords(edges[..., 0].reshape(-1))).reshape(-1, 3, 3).sum(1)
    flip = (normal * outward).sum(1) < 0
    faces = torch.where(flip[:, None], faces[:, [0, 2, 1]], faces)
    area_ok = normal.norm(dim=1) > 1e-12  # drop degenerate triangles (a vertex exactly on the level)
    return Mesh(verts.float(), faces[area_ok])


def field_mesh(field, level: float = 0.5) -> Mesh:
    """Surface of a fitted :class:`~vantage.eval.voxels.Field` in world coordinates.

    ``level`` is the opacity of one voxel length (``1 − exp(−σ)``) at the surface, in (0, 1).
    Vertex colours are the field's RGB (trilinear) at the vertices.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level is an opacity per voxel and must be in (0, 1), got {level}")
    alpha = 1.0 - torch.exp(-field.sigma_grid())
    mesh = marching_tetrahedra(alpha, level)
    if mesh.vertices.numel() == 0:
        return Mesh(mesh.vertices, mesh.faces, torch.zeros(0, 3))
    scale = (field.hi - field.lo).cpu() / (field.resolution - 1)
    world = field.lo.cpu() + mesh.vertices * scale
    with torch.no_grad():
        _, rgb = field.to("cpu").query(world)
    return Mesh(world, mesh.faces, rgb.clamp(0, 1))


def _rgb8(colors: Tensor | None, n: int) -> list[tuple[int, int, int]]:
    if colors is None:
        return [(200, 200, 200)] * n
    return [tuple(row) for row in (colors.clamp(0, 1) * 255).round().to(torch.uint8).tolist()]


def write_ply(mesh: Mesh, path: str | Path) -> Path:
    """ASCII PLY with ``x y z`` (float), ``red green blue`` (uchar) per vertex and triangle faces."""
    path = Path(path)
    v, f = mesh.vertices.tolist(), mesh.faces.tolist()
    rgb = _rgb8(mesh.colors, len(v))
    lines = ["ply", "format ascii 1.0", "comment written by vantage (vantage.eval.mesh)",
             f"element vertex {len(v)}", "property float x", "property float y", "property float z",
             "property uchar red", "property uchar green", "property uchar blue",
             f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    lines += [f"{x:.6g} {y:.6g} {z:.6g} {r} {g} {b}" for (x, y, z), (r, g, b) in zip(v, rgb)]
    lines += [f"3 {a} {b} {c}" for a, b, c in f]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_obj(mesh: Mesh, path: str | Path) -> Path:
    """Wavefront OBJ: ``v x y z r g b`` (colours in [0, 1], a widely read extension) and 1-based ``f``."""
    path = Path(path)
    v, f = mesh.vertices.tolist(), mesh.faces.tolist()
    cols = mesh.colors.clamp(0, 1).tolist() if mesh.colors is not None else None
    lines = ["# written by vantage (vantage.eval.mesh)", f"# {len(v)} vertices, {len(f)} faces"]
    if cols is None:
        lines += [f"v {x:.6g} {y:.6g} {z:.6g}" for x, y, z in v]
    else:
        lines += [f"v {x:.6g} {y:.6g} {z:.6g} {r:.4f} {g:.4f} {b:.4f}" for (x, y, z), (r, g, b) in zip(v, cols)]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in f]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_mesh(mesh: Mesh, path: str | Path, fmt: str | None = None) -> Path:
    """Write ``mesh`` as ``fmt`` ("ply" or "obj"; default from the file suffix)."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt == "ply":
        return write_ply(mesh, path)
    if fmt == "obj":
        return write_obj(mesh, path)
    raise ValueError(f"mesh format must be 'ply' or 'obj', got '{fmt}' (file {path})")
