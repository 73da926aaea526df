"""Textures of a colour field on a mesh: a UV atlas of the mesh and the field's colour baked into it.

* ``uv_unwrap``: charts and their packing by xatlas, fitted into a ``size x size`` texture with at least ``PADDING``
  texels between charts (xatlas' bilinear gutter comes on top); vertices on chart seams are duplicated.
* ``rasterise``: the texels whose centres lie inside each UV triangle (or within a margin of it), with their
  barycentric coordinates, in chunks of bounded size.
* ``bake_texture``: every texel whose centre lies inside a UV triangle gets the field's colour at the matching
  surface point (the texel centre's barycentric coordinates applied to the triangle's 3D vertices).  Texels just
  outside the charts (centres within ``BORDER`` texels of a triangle) get the colour at a point of the nearest such
  triangle (barycentric coordinates clamped to it), so bilinear sampling inside a chart mixes only colours of
  nearby surface points, except where two stretches of one chart's boundary come within a few texels of each
  other (xatlas pads between charts, not inside them).  The result is then dilated ``DILATION`` texels further into
  the gutters (``dilate``), and the texels still empty get the mean colour, so that mipmaps do not bleed
  background into seams.
* ``textured_mesh``: both, as a trimesh mesh whose PBR material has the texture as its base colour.

Texture coordinates follow trimesh and OBJ: ``v`` points up the image, ``(0, 0)`` is its bottom-left corner.  Texel
``(row, col)`` has its centre at ``u = (col + 0.5) / size``, ``v = 1 - (row + 0.5) / size``.
"""

from __future__ import annotations

from typing import Iterator, Tuple

import numpy as np
import torch
import trimesh
import xatlas
from jaxtyping import Bool, Float, Int, UInt8
from PIL import Image

from triplane_gan_ns.errors import UserError
from triplane_gan_ns.surface import ColourFn

PADDING = 2
"""Texels xatlas leaves between charts, besides the texel it keeps free around each for bilinear sampling."""
BORDER = 1.5
"""Texels outside a chart whose centres are this close (in texels) to one of its triangles take that triangle's
colour: every bilinear tap of a point inside the chart is this close to it (at most sqrt(2) texels)."""
DILATION = 4
"""Texels the baked region then grows into its surroundings."""
FACE_BLOCK = 1 << 15
"""Triangles prepared for rasterisation at once."""
MAX_PACKS = 12
"""Packings tried to fit the charts into the texture."""
MIN_CHARTS = 64
"""Charts grow to at most 1/MIN_CHARTS of the surface's area: on marching-cubes meshes of 60k to 150k faces,
unbounded charts made xatlas 4 to 10 times slower, for 10% to 35% more of the texture covered."""


# ---- atlas ----------------------------------------------------------------------------------------------------
def _pack_options(texels_per_unit: float) -> xatlas.PackOptions:
    options = xatlas.PackOptions()
    options.resolution = 0  # a single atlas, as large as the charts need at this scale
    options.texels_per_unit = float(texels_per_unit)
    options.padding = PADDING
    options.bilinear = True
    return options


def _layout(atlas: xatlas.Atlas) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(source vertex, faces, positions in texels, longer side in texels) of an atlas' only mesh."""
    source, faces, uv = (np.asarray(a) for a in atlas[0])
    texels = uv.astype(np.float64) * [atlas.width, atlas.height]
    return source.astype(np.int64), faces.astype(np.int64), texels, max(atlas.width, atlas.height)


def uv_unwrap(
    vertices: Float[np.ndarray, "nv 3"], faces: Int[np.ndarray, "nf 3"], size: int
) -> Tuple[Int[np.ndarray, "nu"], Int[np.ndarray, "nf 3"], Float[np.ndarray, "nu 2"]]:
    """xatlas charts of a mesh, packed into a ``size x size`` texture.

    Returns ``(source, faces, uv)``: the original vertex of each new vertex (seam vertices appear once per chart),
    the faces over the new vertices (in the original order), and their texture coordinates (trimesh convention,
    inside ``[0, 1]``).  The charts are computed once; their packing is redone at other scales until the atlas fits
    in the texture and fills at least 90% of its side.

    xatlas leaves out faces whose area is below float32's epsilon: the mesh is scaled to a mean face area of 1
    first, and the few faces still left out (slivers) collapse onto the texture coordinates one of their vertices
    has in a charted face.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.ascontiguousarray(faces, dtype=np.uint32)
    areas = trimesh.triangles.area(vertices[faces])
    scale_to_unit = 1.0 / np.sqrt(max(float(areas.mean()), 1e-300))
    area = float(areas.sum()) * scale_to_unit**2
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices * scale_to_unit, dtype=np.float32), faces)
    charts = xatlas.ChartOptions()
    charts.max_chart_area = area / MIN_CHARTS
    atlas.generate(charts, _pack_options(size * np.sqrt(0.6 / max(area, 1e-12))))
    first_source, first_faces, first_texels, longest = _layout(atlas)
    charts_uv = np.ascontiguousarray(first_texels, dtype=np.float32)
    charts_faces = np.ascontiguousarray(first_faces, dtype=np.uint32)

    source, new_faces, texels = first_source, first_faces, first_texels
    scale, best = 1.0, None  # texels of the current packing per texel of the first
    for _ in range(MAX_PACKS):
        if longest <= size and (best is None or longest > best[3]):
            best = (source, new_faces, texels, longest)
        if best is not None and best[3] >= 0.9 * size:
            break
        scale *= (0.99 if longest > size else 1.0) * size / longest
        repacked = xatlas.Atlas()
        repacked.add_uv_mesh(charts_uv, charts_faces)
        repacked.generate(xatlas.ChartOptions(), _pack_options(scale))
        chart_vertex, new_faces, texels, longest = _layout(repacked)
        source = first_source[chart_vertex]
    if best is None:
        raise UserError(
            f"the mesh's {len(faces)} faces do not fit a {size}x{size} texture with padding between charts; use a "
            "larger --texture-size, or fewer faces (--max-faces, a lower --resolution)"
        )
    source, new_faces, texels, _ = best
    source, new_faces, texels = _place_left_out_faces(source, new_faces, texels, len(vertices))
    uv = np.stack([texels[:, 0] / size, 1.0 - texels[:, 1] / size], axis=-1)
    return source, new_faces, uv


def _place_left_out_faces(
    source: Int[np.ndarray, "nu"], faces: Int[np.ndarray, "nf 3"], texels: Float[np.ndarray, "nu 2"], count: int
) -> Tuple[Int[np.ndarray, "nw"], Int[np.ndarray, "nf 3"], Float[np.ndarray, "nw 2"]]:
    """Faces xatlas left out have all corners at texel (0, 0) (never a chart's: charts are padded).  Each gets
    three vertices of its own, all where one of its vertices lies in a charted face: the face (of no area in the
    texture) takes the colour there and covers no texels."""
    left_out = (texels[faces] == 0).all(axis=(1, 2))
    if not left_out.any():
        return source, faces, texels
    charted = np.unique(faces[~left_out])
    placed = np.zeros((count, 2))
    known = np.zeros(count, dtype=bool)
    placed[source[charted]], known[source[charted]] = texels[charted], True
    corners = source[faces[left_out]]  # [k, 3] original vertices
    first_known = np.argmax(known[corners], axis=1)  # the first corner placed elsewhere (0 when none is)
    point = placed[corners[np.arange(len(corners)), first_known]]
    faces = faces.copy()
    faces[left_out] = len(source) + np.arange(3 * len(corners)).reshape(-1, 3)
    source = np.concatenate([source, corners.reshape(-1)])
    texels = np.concatenate([texels, np.repeat(point, 3, axis=0)])
    used, faces = np.unique(faces, return_inverse=True)  # drop the copies only left-out faces used
    return source[used], faces.reshape(-1, 3), texels[used]


# ---- rasterisation ----------------------------------------------------------------------------------------------
def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def _clamped(bary: Float[np.ndarray, "k 3"]) -> Float[np.ndarray, "k 3"]:
    """Barycentric coordinates moved onto the triangle (negative ones set to 0, the rest rescaled to sum 1)."""
    bary = bary.clip(min=0.0)
    return bary / bary.sum(axis=-1, keepdims=True)


def _barycentric(triangles: Float[np.ndarray, "k 3 2"], points: Float[np.ndarray, "k 2"]) -> Float[np.ndarray, "k 3"]:
    """Barycentric coordinates of points in triangles of non-zero area."""
    a, ab, ac = triangles[:, 0], triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]
    offset, area2 = points - a, _cross(ab, ac)
    bary_b, bary_c = _cross(offset, ac) / area2, _cross(ab, offset) / area2
    return np.stack([1.0 - bary_b - bary_c, bary_b, bary_c], axis=-1)


def rasterise(
    triangles: Float[np.ndarray, "nf 3 2"], size: int, margin: float = 0.0, chunk: int = 1 << 18
) -> Iterator[Tuple[Int[np.ndarray, "k"], Int[np.ndarray, "k"], Float[np.ndarray, "k 3"], Float[np.ndarray, "k"]]]:
    """Texels of a ``size x size`` image covered by triangles given in texel units (x right, y down; texel
    ``(row, col)`` has its centre at ``(col + 0.5, row + 0.5)``).

    Yields ``(texel, face, barycentric, outside)`` chunks of at most about ``chunk`` candidate texels: flat texel
    indices ``row * size + col`` whose centres lie inside triangle ``face`` or within ``margin`` texels of its edge
    lines (and of its bounding box), the centres' barycentric coordinates clamped to the triangle, and how far (in
    texels) outside the triangle's edge lines the centres are (0 inside).  A texel can come once per triangle it is
    near.  Triangles of zero area in texture space cover nothing.
    """
    triangles = np.asarray(triangles, dtype=np.float64)
    for first in range(0, len(triangles), FACE_BLOCK):
        tri = triangles[first : first + FACE_BLOCK]
        area2 = _cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # twice the signed area
        lo = np.ceil(tri.min(axis=1) - margin - 0.5).astype(np.int64)  # first texel centre >= min - margin
        hi = np.floor(tri.max(axis=1) + margin - 0.5).astype(np.int64)
        lo, hi = np.maximum(lo, 0), np.minimum(hi, size - 1)
        heights = np.where(np.abs(area2) > 1e-12, hi[:, 1] - lo[:, 1] + 1, 0).clip(min=0)
        widths = (hi[:, 0] - lo[:, 0] + 1).clip(min=0)
        heights[widths == 0] = 0
        # signed distance (texels, positive inside) per unit barycentric coordinate: the triangle's heights
        edge = np.linalg.norm(tri[:, [2, 0, 1]] - tri[:, [1, 2, 0]], axis=-1)  # the side opposite each corner
        height = np.abs(area2)[:, None] / np.maximum(edge, 1e-300)

        # one span per (triangle, row of its bounding box), cut into chunks of bounded total width
        span_face = np.repeat(np.arange(len(tri)), heights)
        span_row = np.arange(len(span_face)) - np.repeat(np.cumsum(heights) - heights, heights)
        span_row += lo[span_face, 1]
        span_width = widths[span_face]
        ends = np.cumsum(span_width)
        start = 0
        while start < len(span_face):
            base = ends[start - 1] if start else 0
            stop = max(int(np.searchsorted(ends, base + chunk, side="right")), start + 1)
            face, row, width = span_face[start:stop], span_row[start:stop], span_width[start:stop]
            start = stop
            face = np.repeat(face, width)
            row = np.repeat(row, width)
            col = np.arange(len(face)) - np.repeat(np.cumsum(width) - width, width) + lo[face, 0]
            bary = _barycentric(tri[face], np.stack([col + 0.5, row + 0.5], axis=-1))
            outside = -(bary * height[face]).min(axis=-1)
            keep = (outside <= margin + 1e-7).nonzero()[0]
            if len(keep) == 0:
                continue
            texel = row[keep] * size + col[keep]
            yield texel, first + face[keep], _clamped(bary[keep]), outside[keep].clip(min=0.0)


def dilate(
    image: UInt8[np.ndarray, "h w c"], filled: Bool[np.ndarray, "h w"], texels: int
) -> Tuple[UInt8[np.ndarray, "h w c"], Bool[np.ndarray, "h w"]]:
    """Grow the filled texels ``texels`` steps into empty ones: each step, an empty texel with filled neighbours
    (8-connected) takes their mean colour."""
    image, filled = image.copy(), filled.copy()
    height, width = filled.shape
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    for _ in range(texels):
        padded = np.pad(np.where(filled[..., None], image, 0).astype(np.uint16), ((1, 1), (1, 1), (0, 0)))
        padded_mask = np.pad(filled, 1).astype(np.uint8)
        total = np.zeros(image.shape, dtype=np.uint16)
        count = np.zeros(filled.shape, dtype=np.uint8)
        for dy, dx in shifts:
            total += padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
            count += padded_mask[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        grow = ~filled & (count > 0)
        if not grow.any():
            break
        image[grow] = ((total[grow] + count[grow, None] // 2) // count[grow, None]).astype(np.uint8)
        filled |= grow
    return image, filled


# ---- baking --------------------------------------------------------------------------------------------------------
@torch.no_grad()
def bake_texture(
    colour_fn: ColourFn,
    vertices: Float[np.ndarray, "nv 3"],
    faces: Int[np.ndarray, "nf 3"],
    uv: Float[np.ndarray, "nv 2"],
    size: int,
    chunk_size: int = 1 << 18,
    device: torch.device | str = "cpu",
) -> Tuple[UInt8[np.ndarray, "size size 3"], Bool[np.ndarray, "size size"]]:
    """The colour of ``colour_fn`` ([0, 1] RGB of world points) on a UV-mapped mesh, as a ``size x size`` RGB
    image (row 0 at the top, ``v = 1``); also the mask of the texels baked from the surface (inside or at most
    ``BORDER`` texels outside the charts), before dilation.  Texel centres inside a triangle are baked in chunks of
    ``chunk_size``; then each empty texel within ``BORDER`` texels of triangles takes the nearest one."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    pixels = np.stack([uv[:, 0] * size, (1.0 - uv[:, 1]) * size], axis=-1)[faces]
    image = np.zeros((size * size, 3), dtype=np.uint8)
    baked = np.zeros(size * size, dtype=bool)

    def bake(texel: np.ndarray, face: np.ndarray, bary: np.ndarray) -> None:
        points = np.einsum("kj,kjd->kd", bary, vertices[faces[face]])
        rgb = colour_fn(torch.as_tensor(points, dtype=torch.float32, device=device))
        image[texel] = np.round(rgb.reshape(-1, 3).clamp(0, 1).float().cpu().numpy() * 255).astype(np.uint8)
        baked[texel] = True

    for texel, face, bary, _ in rasterise(pixels, size, 0.0, chunk_size):
        bake(texel, face, bary)

    # texels outside the charts: the nearest triangle within BORDER texels
    nearest = np.full(size * size, np.inf, dtype=np.float32)
    owner = np.full(size * size, -1, dtype=np.int32)
    for texel, face, _, outside in rasterise(pixels, size, BORDER, chunk_size):
        empty = ~baked[texel]
        texel, face, outside = texel[empty], face[empty], outside[empty].astype(np.float32)
        order = np.lexsort((outside, texel))
        texel, first = np.unique(texel[order], return_index=True)
        face, outside = face[order][first], outside[order][first]
        closer = outside < nearest[texel]
        nearest[texel[closer]], owner[texel[closer]] = outside[closer], face[closer]
    ring = np.flatnonzero(owner >= 0)
    for start in range(0, len(ring), chunk_size):
        texel = ring[start : start + chunk_size]
        face = owner[texel].astype(np.int64)
        centre = np.stack([texel % size + 0.5, texel // size + 0.5], axis=-1)
        bake(texel, face, _clamped(_barycentric(pixels[face], centre)))

    image, baked = image.reshape(size, size, 3), baked.reshape(size, size)
    grown, filled = dilate(image, baked, DILATION)
    if baked.any():
        grown[~filled] = np.round(image[baked].mean(axis=0)).astype(np.uint8)
    return grown, baked


def textured_mesh(
    mesh: trimesh.Trimesh,
    colour_fn: ColourFn,
    size: int,
    chunk_size: int = 1 << 18,
    device: torch.device | str = "cpu",
    name: str = "mesh",
) -> trimesh.Trimesh:
    """``mesh`` UV-unwrapped (seam vertices duplicated, normals kept from the original vertices) with the colour
    field baked into a ``size x size`` texture: a PBR material (not metallic, fully rough) named ``name``."""
    mesh = mesh.copy()
    mesh.merge_vertices()
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.remove_unreferenced_vertices()
    normals = np.asarray(mesh.vertex_normals)
    source, faces, uv = uv_unwrap(mesh.vertices, mesh.faces, size)
    vertices = np.asarray(mesh.vertices)[source]
    image, _ = bake_texture(colour_fn, vertices, faces, uv, size, chunk_size, device)
    material = trimesh.visual.material.PBRMaterial(
        name=name,
        baseColorTexture=Image.fromarray(image, mode="RGB"),
        baseColorFactor=[255, 255, 255, 255],
        metallicFactor=0.0,
        roughnessFactor=1.0,
    )
    return trimesh.Trimesh(
        vertices=vertices,
        faces=faces,
        vertex_normals=normals[source],
        visual=trimesh.visual.TextureVisuals(uv=uv, material=material),
        process=False,
    )
