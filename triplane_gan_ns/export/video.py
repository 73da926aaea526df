"""``triplane-gan render`` (``render_latents``): views, orbit videos, depth and opacity images of generated objects.

For every latent (each ``--classes`` x ``--seeds`` pair, or each ``--latent`` file) it writes, into
``--output-dir``::

    <name>_grid.png      --views azimuths (k * 360 / views degrees) side by side, at --elevation-degrees
    <name>_depth.png     expected depth of the same views, normalised over the object and colour-mapped (turbo)
    <name>_opacity.png   accumulated opacity of the same views (white = opaque)
    <name>_orbit.gif     --frames + 1 frames at azimuths k * 360 / frames, k = 0..frames (closed loop)
    <name>_orbit.mp4     the same frames (H.264 through PyAV; skipped with a note when PyAV is unavailable)

where ``<name>`` is ``class<c>_seed<s>`` or ``latent-<file stem>``.  The orbit's last frame shows azimuth 360°,
the same camera as the first, so the loop closes (and the two frames are identical).

Resolution: at the model's output resolution (the default) images go through the trained path, volume
rendering at the neural resolution then super-resolution; depth and opacity are at the neural resolution.  At
any other ``--resolution`` the cameras are built at that size and the images are raw volume renderings (no
super-resolution), in chunks of rays.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from jaxtyping import Float, UInt8
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.utils.colormaps import ColormapOptions, apply_depth_colormap
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor

from triplane_gan_ns.cameras import look_at, make_cameras, orbit_directions
from triplane_gan_ns.errors import UserError
from triplane_gan_ns.fileio import atomic_write, check_writable_dir
from triplane_gan_ns.latents import Latent, LatentSpec, ModelOrConfig, as_model, check_finite, check_truncation, resolve_latent
from triplane_gan_ns.model import TriplaneGANModel
from triplane_gan_ns.occupancy import OccupancyGrid

MIN_RESOLUTION, MAX_RESOLUTION = 8, 4096
BYTES_PER_PIXEL = 4 * (3 + 1 + 1) + 3
"""Kept per rendered pixel until a latent's files are written: float RGB, depth and opacity, and uint8 RGB."""


def available_memory() -> int:
    """Bytes of memory available to a new allocation on this machine (physical memory free for use)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


# ---- cameras ----------------------------------------------------------------------------------------------
def orbit_cameras(
    num_views: int,
    resolution: int,
    radius: float,
    fov_degrees: float,
    elevation_degrees: float = 20.0,
    closed: bool = False,
) -> Cameras:
    """Cameras at azimuths ``k * 360 / num_views`` looking at the origin; ``closed`` adds ``k = num_views``,
    which is the very same camera as ``k = 0`` (so the orbit's last frame equals its first)."""
    eyes = radius * orbit_directions(num_views, elevation_degrees, closed)
    return make_cameras(look_at(eyes), resolution, fov_degrees)


# ---- rendering ----------------------------------------------------------------------------------------------
@torch.no_grad()
def render_view(
    model: TriplaneGANModel,
    ws: Float[Tensor, "1 num_ws w_dim"],
    planes: Tensor,
    camera: Cameras,
    raw: bool,
    rays_per_chunk: Optional[int] = None,
    occupancy: Optional[OccupancyGrid] = None,
) -> Dict[str, Tensor]:
    """One camera's ``image`` [3, H, W] in [0, 1], ``depth`` [1, h, w] and ``accumulation`` [1, h, w].

    ``raw``: volume rendering at the camera's own size, in chunks of rays, skipping the latent's empty space
    (``occupancy``: its grid, computed here when not given).  Otherwise the trained path (camera at the neural
    resolution, super-resolution to the output resolution), exactly as ``model.generate`` does.
    """
    gen = model.generator_ema
    camera = camera.to(model.device)
    if not raw:
        out = gen.render(ws, camera, planes=planes, noise_mode="const")
        return {
            "image": out["image"][0].clamp(0, 1),
            "depth": out["depth"][0],
            "accumulation": out["accumulation"][0],
        }
    chunk = rays_per_chunk or model.config.eval_num_rays_per_chunk
    occupancy = occupancy if occupancy is not None else gen.occupancy_grid(planes)
    images = {k: v.permute(2, 0, 1) for k, v in gen.render_camera(planes, camera, chunk, occupancy).items()}
    return {"image": images["rgb"].clamp(0, 1), "depth": images["depth"], "accumulation": images["accumulation"]}


@torch.no_grad()
def render_views(
    model: TriplaneGANModel,
    latent: Latent,
    cameras: Cameras,
    raw: bool,
    on_view: Optional[Callable[[], None]] = None,
) -> Dict[str, Float[Tensor, "views channels height width"]]:
    """Every camera of ``cameras`` (one at a time, so each view's pixels do not depend on the others)."""
    ws = latent.ws(model)
    planes = model.generator_ema.fixed_planes(ws)
    occupancy = model.generator_ema.occupancy_grid(planes) if raw else None  # once per latent
    outs: Dict[str, List[Tensor]] = {}
    for i in range(cameras.shape[0]):
        for key, value in render_view(model, ws, planes, cameras[i : i + 1], raw, occupancy=occupancy).items():
            outs.setdefault(key, []).append(value.cpu())
        if on_view is not None:
            on_view()
    return {k: torch.stack(v) for k, v in outs.items()}


# ---- images -------------------------------------------------------------------------------------------------
def to_uint8(images: Float[Tensor, "*bs channels height width"]) -> UInt8[np.ndarray, "*bs height width channels"]:
    """[0, 1] channel-first images to uint8 channel-last arrays."""
    return (images.clamp(0, 1).movedim(-3, -1).cpu().numpy() * 255).round().astype(np.uint8)


def side_by_side(images: Float[Tensor, "views channels height width"]) -> Float[Tensor, "channels height total"]:
    return torch.cat(list(images), dim=-1)


def colour_depth(
    depth: Float[Tensor, "views 1 height width"], accumulation: Float[Tensor, "views 1 height width"]
) -> Float[Tensor, "views 3 height width"]:
    """Depth normalised over the object's pixels (opacity > 0.5, all pixels if none) of all views together,
    colour-mapped with turbo and composited over white by opacity."""
    fg = accumulation > 0.5
    values = depth[fg] if fg.any() else depth.flatten()
    near, far = float(values.min()), float(values.max())
    coloured = apply_depth_colormap(
        depth.movedim(1, -1),
        accumulation=accumulation.movedim(1, -1).clamp(0, 1),
        near_plane=near,
        far_plane=far,
        colormap_options=ColormapOptions(colormap="turbo"),
    )
    return coloured.movedim(-1, 1)


def write_png(path: Path, array: UInt8[np.ndarray, "height width *channels"]) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def write_gif(path: Path, frames: UInt8[np.ndarray, "frames height width 3"], fps: int) -> None:
    images = [Image.fromarray(f) for f in frames]
    duration = max(20, round(1000 / fps))
    atomic_write(
        path,
        lambda tmp: images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0
        ),
    )


def mp4_codec() -> Optional[str]:
    """An MP4 video encoder PyAV offers here (libx264, else mpeg4), or None when PyAV is missing."""
    try:
        import av
    except ImportError:
        return None
    for codec in ("libx264", "mpeg4"):
        if codec in av.codecs_available:
            return codec
    return None


def write_mp4(path: Path, frames: UInt8[np.ndarray, "frames height width 3"], fps: int) -> bool:
    """Encode ``frames`` as MP4 with PyAV; False (nothing written) when no encoder is available.

    yuv420p needs even sides: odd-sized frames are padded by repeating their last row/column."""
    codec = mp4_codec()
    if codec is None:
        return False
    import av

    h, w = frames.shape[1:3]
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")

    def write(tmp: Path) -> None:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream(codec, rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": "18"}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)

    atomic_write(path, write)
    return True


# ---- the command ------------------------------------------------------------------------------------------
def _check_options(
    num_latents: int,
    truncation: float,
    elevation_degrees: float,
    radius: Optional[float],
    fov_degrees: Optional[float],
    views: int,
    frames: int,
    fps: int,
    resolution: Optional[int],
) -> None:
    if resolution is not None and resolution < MIN_RESOLUTION:
        raise UserError(f"--resolution {resolution} is too small; use at least {MIN_RESOLUTION}")
    if resolution is not None and resolution > MAX_RESOLUTION:
        raise UserError(f"--resolution {resolution} is too large; use at most {MAX_RESOLUTION}")
    check_truncation(truncation)
    check_finite("--elevation-degrees", elevation_degrees, "an angle in degrees such as 20")
    for flag, value in (("--radius", radius), ("--fov-degrees", fov_degrees)):
        if value is not None:
            check_finite(flag, value, "a positive number")
    if views < 1:
        raise UserError("--views must be at least 1")
    if frames < 2:
        raise UserError("--frames must be at least 2")
    if fps < 1:
        raise UserError("--fps must be at least 1")
    if radius is not None and radius <= 0:
        raise UserError("--radius must be positive")
    if fov_degrees is not None and not 0 < fov_degrees < 180:
        raise UserError("--fov-degrees must be between 0 and 180")
    if num_latents == 0:
        raise UserError("give at least one class and one seed (--classes, --seeds) or a --latent file")
    if resolution is not None:  # the views and frames of one latent are held in memory together
        needed = (views + frames + 1) * resolution**2 * BYTES_PER_PIXEL
        if needed > available_memory():
            raise UserError(
                f"--resolution {resolution} with --views {views} and --frames {frames} needs "
                f"about {needed / 2**30:.1f} GiB of memory but {available_memory() / 2**30:.1f} GiB are available; "
                f"lower --resolution, --views or --frames"
            )


def render_latents(
    model: ModelOrConfig,
    latents: Sequence[LatentSpec],
    output_dir: Path,
    *,
    truncation: float = 0.7,
    views: int = 8,
    frames: int = 48,
    fps: int = 24,
    elevation_degrees: float = 20.0,
    radius: Optional[float] = None,
    fov_degrees: Optional[float] = None,
    resolution: Optional[int] = None,
    checkpoint: Optional[Path] = None,
    device: str = "auto",
) -> List[Path]:
    """Write the grid, depth and opacity PNGs and the orbit GIF (and MP4) of every latent into ``output_dir``
    (created if missing), as ``triplane-gan render`` does; returns the files written.

    ``model``: a loaded model, or a run's ``config.yml`` (loaded from ``checkpoint``, default the latest, onto
    ``device``).  ``latents``: ``Latent``s, latent files, or ``(class, seed)`` pairs (class by index or name),
    the pairs truncated with ``truncation``.  ``radius`` and ``fov_degrees`` default to the model's pose
    sampler; ``resolution`` (default: the model's output resolution) other than the model's renders raw volume
    rendering at that size.  Bad options raise ``UserError``.
    """
    _check_options(len(latents), truncation, elevation_degrees, radius, fov_degrees, views, frames, fps, resolution)
    model = as_model(model, checkpoint, device)
    resolved = [resolve_latent(model, spec, truncation) for spec in latents]
    out_dir = Path(output_dir)
    check_writable_dir(out_dir, create=True)

    sampler = model.pose_sampler.config
    radius = radius if radius is not None else sampler.radius
    fov = fov_degrees if fov_degrees is not None else sampler.fov_degrees
    raw = resolution is not None and resolution != model.resolution
    camera_resolution = resolution if raw else model.neural_resolution
    if raw:
        CONSOLE.print(
            f"Rendering raw volume rendering at {resolution}² (no super-resolution; "
            f"the model's output resolution is {model.resolution}²)"
        )
    grid_cameras = orbit_cameras(views, camera_resolution, radius, fov, elevation_degrees)
    orbit = orbit_cameras(frames, camera_resolution, radius, fov, elevation_degrees, closed=True)
    if mp4_codec() is None:
        CONSOLE.print("[yellow]PyAV with an MP4 encoder is not available: writing GIF orbits only")

    written: List[Path] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=CONSOLE) as bar:
        task = bar.add_task("rendering", total=len(resolved) * (views + frames + 1))
        for latent in resolved:
            bar.update(task, description=f"rendering {latent.name}")
            rendered = render_views(model, latent, grid_cameras, raw, on_view=lambda: bar.advance(task))
            images = to_uint8(render_views(model, latent, orbit, raw, on_view=lambda: bar.advance(task))["image"])
            written += write_outputs(out_dir, latent.name, rendered, images, fps)
    CONSOLE.print(f"Wrote {len(written)} files for {len(resolved)} latents to {out_dir}")
    return written


def write_outputs(
    out_dir: Path,
    name: str,
    views: Dict[str, Tensor],
    frames: UInt8[np.ndarray, "frames height width 3"],
    fps: int,
) -> List[Path]:
    """The grid, depth and opacity PNGs and the orbit GIF (and MP4) of one latent."""
    paths = {k: out_dir / f"{name}_{k}" for k in ("grid.png", "depth.png", "opacity.png", "orbit.gif", "orbit.mp4")}
    write_png(paths["grid.png"], to_uint8(side_by_side(views["image"])))
    depth = colour_depth(views["depth"], views["accumulation"])
    write_png(paths["depth.png"], to_uint8(side_by_side(depth)))
    write_png(paths["opacity.png"], to_uint8(side_by_side(views["accumulation"]))[..., 0])
    write_gif(paths["orbit.gif"], frames, fps)
    written = [paths[k] for k in ("grid.png", "depth.png", "opacity.png", "orbit.gif")]
    if write_mp4(paths["orbit.mp4"], frames, fps):
        written.append(paths["orbit.mp4"])
    return written
