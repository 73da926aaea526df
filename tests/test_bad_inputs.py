"""Every bad input to every command, through the real entry point: exit status not 0, exactly one ``error:`` line
on stderr, no traceback, nothing outside the case's output folder changed, and nothing a malicious file names
ever runs.

One parametrised test per command; every case fails before any training or rendering work.  The inputs (a copy of
a tiny trained run with a malicious config, malicious and truncated checkpoints and latents, corrupt photos, a
truncated archive, ...) are made once per module.
"""

from __future__ import annotations

import os
import shutil
import concurrent.futures
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch

BIN = Path(sys.executable).parent
MARKER = "PWNED"


class _Evil:
    """Pickles to a call of os.system that creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def inputs(trained_tiny_run, tmp_path_factory) -> Dict[str, Path]:
    """Bad inputs, all inside one folder (snapshotted by every case)."""
    from photo_fixtures import make_photo_tree
    from triplane_gan_ns.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("bad-inputs")
    marker = root / MARKER
    run = trained_tiny_run
    ckpt = max((run / "nerfstudio_models").glob("step-*.ckpt"))
    paths: Dict[str, Path] = {"root": root, "run": run, "config": run / "config.yml", "ckpt": ckpt}

    evil = root / "evil.pt"
    torch.save({"ws": _Evil(marker), "class_index": 0, "step": 1, "pipeline": {}, "optimizers": {}}, evil)
    paths["evil_pickle"] = evil
    truncated = root / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    paths["truncated_ckpt"] = truncated
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    key = next(k for k in state["pipeline"] if k.startswith("_model.generator_ema.") and state["pipeline"][k].ndim == 2)
    state["pipeline"][key] = torch.zeros(3, 5)
    paths["mismatched_ckpt"] = root / "mismatched.ckpt"
    torch.save(state, paths["mismatched_ckpt"])
    paths["mismatched_key"] = Path(key[len("_model.") :])
    (root / "notes.txt").write_text("neither a picture nor a latent nor a checkpoint")
    paths["text"] = root / "notes.txt"
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\x00broken")
    paths["broken_photo"] = root / "broken.jpg"
    (root / "no-photos").mkdir()
    (root / "no-photos" / "readme.txt").write_text("nothing to invert")
    paths["no_photos"] = root / "no-photos"

    # a run folder whose config.yml runs a command when loaded unsafely
    evil_run = root / "evil-run"
    shutil.copytree(run, evil_run)
    text = (evil_run / "config.yml").read_text()
    assert "experiment_name: tiny\n" in text
    (evil_run / "config.yml").write_text(
        text.replace("experiment_name: tiny\n", f'experiment_name: !!python/object/apply:os.system ["touch {marker}"]\n')
    )
    paths["evil_config"] = evil_run / "config.yml"
    # a run folder whose only checkpoint-like file is not a step checkpoint
    best_run = root / "best-run"
    shutil.copytree(run, best_run, ignore=shutil.ignore_patterns("*.ckpt"))
    shutil.copy(ckpt, best_run / "nerfstudio_models" / "step-best.ckpt")
    paths["best_config"] = best_run / "config.yml"
    paths["best_models"] = best_run / "nerfstudio_models"

    # a prepare-dataset archive with a truncated image shard, and its photos
    photos = root / "photos"
    make_photo_tree(photos)
    paths["photos"] = photos
    archive = root / "archive"
    prepare_dataset(photos, archive, resolution=32, shard_size=4, workers=1)
    shard = archive / "images-00001.npy"
    shard.write_bytes(shard.read_bytes()[:200])
    paths["archive"] = archive
    (root / "empty").mkdir()
    paths["empty"] = root / "empty"
    paths["marker"] = marker
    paths["outputs"] = tmp_path_factory.mktemp("bad-input-outputs")
    paths["snapshot"] = _snapshot(root, run)  # type: ignore[assignment]
    return paths


def _snapshot(*roots: Path) -> Dict[str, Tuple[int, int]]:
    files = {}
    for root in roots:
        for path in Path(root).rglob("*"):
            if path.is_file():
                stat = path.stat()
                files[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return files


def _check(command: List[str], expected: str, inputs: Dict[str, Path], out: Path) -> None:
    """Wait for ``command`` (started with the others by ``_launch``) and check its failure."""
    before, result = inputs["snapshot"], _launch(inputs, command).result()
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0, (result.stdout[-2000:], result.stderr[-2000:])
    assert len(errors) == 1, result.stderr[-3000:]
    assert expected in errors[0], errors[0]
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr[-3000:]
    assert "weights_only=False" not in errors[0] and "`weights_only`" not in errors[0]
    assert _snapshot(inputs["root"], inputs["run"]) == before  # nothing outside the output folder changed
    assert not inputs["marker"].exists()  # nothing a malicious file names ran
    assert not list(out.rglob("config.yml")) if out.exists() else True  # no run folder was left behind


_STARTED: Dict[Tuple[str, ...], "concurrent.futures.Future"] = {}
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=2)  # one process per core: each is mostly imports


def _launch(inputs: Dict[str, Path], command: List[str]) -> "concurrent.futures.Future":
    """Start ``command`` (or return its run if already started); the first call starts every case of the
    table, so that the cases run two at a time while the tests wait for them in order."""
    if not _STARTED:
        for build in _BUILDERS:
            for case in sorted(build.cases):
                other = build(case, inputs, _out_folder(inputs, build.__name__, case))[0]
                _STARTED[tuple(other)] = _POOL.submit(
                    subprocess.run, other, capture_output=True, text=True, timeout=600, env=dict(os.environ)
                )
    key = tuple(command)
    if key not in _STARTED:
        _STARTED[key] = _POOL.submit(subprocess.run, command, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    return _STARTED[key]


def _out_folder(inputs: Dict[str, Path], command: str, case: str) -> Path:
    return inputs["outputs"] / command / case.replace(" ", "-") / "out"


def _fill(args: List[str], inputs: Dict[str, Path], out: Path) -> List[str]:
    values = {k: str(v) for k, v in inputs.items()}
    return [a.format(out=out, **values) for a in args]


# ---- ns-train -------------------------------------------------------------------------------------------------
NS_TRAIN = {
    "zero iterations": (["--max-num-iterations", "0"], "--max-num-iterations 0"),
    "negative iterations": (["--max-num-iterations", "-3"], "--max-num-iterations -3"),
    "zero steps per save": (["--steps-per-save", "0"], "--steps-per-save 0"),
    "neural resolution above data": (
        ["--pipeline.model.generator.neural-resolution", "64"], "neural_resolution 64 exceeds the output (data) resolution 32"
    ),
    "output dir under a file": (["--output-dir", "{text}/runs"], "--output-dir"),
    "read-only output dir": (["--output-dir", "/proc/triplane-gan-runs"], "cannot write to /proc"),
    "missing data": (["--data", "{root}/nope"], "nope does not exist"),
    "load dir with only step-best": (["--load-dir", "{best_models}"], "no step-*.ckpt checkpoint"),
    "load step that does not exist": (["--load-dir", "{run}/nerfstudio_models", "--load-step", "7"], "--load-step 7"),
    "malicious checkpoint": (["--load-checkpoint", "{evil_pickle}"], "unsupported GLOBAL"),
    "truncated checkpoint": (["--load-checkpoint", "{truncated_ckpt}"], "cannot be read"),
    "missing checkpoint": (["--load-checkpoint", "{root}/nope.ckpt"], "nope.ckpt does not exist"),
    "architecture mismatch": (
        ["--load-checkpoint", "{ckpt}", "--pipeline.model.generator.neural-resolution", "16",
         "--pipeline.model.dual-discrimination", "False"],
        "weights missing from the checkpoint, first _model.generator.superresolution.",
    ),
    "truncated archive shard": (
        ["triplane-gan-imagenet", "--data", "{archive}"], "shard images-00001.npy is truncated; re-run triplane-gan prepare-dataset"
    ),
}


def ns_train(case, inputs, out):
    args, expected = NS_TRAIN[case]
    args = _fill(args, inputs, out)
    if "--output-dir" not in args:
        args = ["--output-dir", str(out), *args]
    if "--max-num-iterations" not in args:
        args = ["--max-num-iterations", "2", *args]  # a dataparser subcommand, if any, stays last
    return [str(BIN / "ns-train"), "triplane-gan-tiny", "--vis", "tensorboard", *args], expected


@pytest.mark.parametrize("case", sorted(NS_TRAIN))
def test_ns_train(case, inputs):
    out = _out_folder(inputs, "ns_train", case)
    _check(*ns_train(case, inputs, out), inputs=inputs, out=out)
    assert not list((out / "unnamed").rglob("step-*.ckpt")) if (out / "unnamed").exists() else True


# ---- triplane-gan render ---------------------------------------------------------------------------------------
RENDER = {
    "missing config": (["--load-config", "{root}/nope/config.yml"], "config.yml does not exist"),
    "malicious config": (["--load-config", "{evil_config}"], "tag !!python/object/apply:os.system is not allowed"),
    "missing checkpoint": (["--checkpoint", "{root}/nope.ckpt"], "nope.ckpt does not exist"),
    "malicious checkpoint": (["--checkpoint", "{evil_pickle}"], "unsupported GLOBAL"),
    "truncated checkpoint": (["--checkpoint", "{truncated_ckpt}"], "cannot be read"),
    "mismatched checkpoint": (["--checkpoint", "{mismatched_ckpt}"], "{mismatched_key} is (3, 5) in the checkpoint"),
    "only step-best checkpoint": (["--load-config", "{best_config}"], "no checkpoint in"),
    "unknown class": (["--classes", "chair"], "unknown class 'chair'"),
    "class out of range": (["--classes", "7"], "class 7 is out of range"),
    "truncation nan": (["--truncation", "nan"], "--truncation nan is not a finite number"),
    "truncation inf": (["--truncation", "inf"], "--truncation inf is not a finite number"),
    "resolution huge": (["--resolution", "100000"], "--resolution 100000 is too large"),
    "resolution tiny": (["--resolution", "4"], "--resolution 4 is too small"),
    "resolution beyond memory": (["--resolution", "4096", "--frames", "100000"], "GiB of memory"),
    "radius nan": (["--radius", "nan"], "--radius nan is not a finite number"),
    "fov out of range": (["--fov-degrees", "200"], "--fov-degrees"),
    "malicious latent": (["--latent", "{evil_pickle}"], "unsupported GLOBAL"),
    "text as latent": (["--latent", "{text}"], "cannot be read"),
    "output under a file": (["--output-dir", "{text}/o"], "cannot write"),
}


def render(case, inputs, out):
    args, expected = RENDER[case]
    args = _fill(args, inputs, out)
    if "--load-config" not in args:
        args = ["--load-config", str(inputs["config"]), *args]
    if "--output-dir" not in args:
        args += ["--output-dir", str(out)]
    return [str(BIN / "triplane-gan"), "render", *args], expected.format(**inputs)


@pytest.mark.parametrize("case", sorted(RENDER))
def test_render(case, inputs):
    out = _out_folder(inputs, "render", case)
    _check(*render(case, inputs, out), inputs=inputs, out=out)
    assert not out.exists() or not any(out.iterdir())


# ---- triplane-gan export-mesh ----------------------------------------------------------------------------------
EXPORT_MESH = {
    "missing config": (["--load-config", "{root}/nope/config.yml"], "config.yml does not exist"),
    "malicious config": (["--load-config", "{evil_config}"], "is not allowed"),
    "malicious checkpoint": (["--checkpoint", "{evil_pickle}"], "unsupported GLOBAL"),
    "truncation nan": (["--truncation", "nan"], "--truncation nan is not a finite number"),
    "truncation -inf": (["--truncation", "-inf"], "--truncation -inf is not a finite number"),
    "density threshold nan": (["--density-threshold", "nan"], "--density-threshold nan"),
    "resolution huge": (["--resolution", "100000"], "8..1024"),
    "mesh suffix": (["--output", "{out}/m.stl"], ".ply, .obj, .glb"),
    "output under a file": (["--output", "{text}/m.ply"], "is not a folder"),
    "unknown class": (["--class", "chair"], "unknown class 'chair'"),
    "malicious latent": (["--latent", "{evil_pickle}"], "unsupported GLOBAL"),
}


def export_mesh(case, inputs, out):
    args, expected = EXPORT_MESH[case]
    args = _fill(args, inputs, out)
    if "--load-config" not in args:
        args = ["--load-config", str(inputs["config"]), *args]
    if "--output" not in args:
        args += ["--output", str(out / "m.ply")]
    return [str(BIN / "triplane-gan"), "export-mesh", "--resolution", "16", *args], expected


@pytest.mark.parametrize("case", sorted(EXPORT_MESH))
def test_export_mesh(case, inputs):
    out = _out_folder(inputs, "export_mesh", case)
    _check(*export_mesh(case, inputs, out), inputs=inputs, out=out)
    assert not out.exists() or not any(out.iterdir())


# ---- triplane-gan invert ---------------------------------------------------------------------------------------
INVERT = {
    "missing photo": (["--image", "{root}/nope.png"], "nope.png does not exist"),
    "corrupt photo": (["--image", "{broken_photo}"], "not a readable image"),
    "folder without photos": (["--image", "{no_photos}"], "no photos in"),
    "malicious config": (["--load-config", "{evil_config}", "--image", "{broken_photo}"], "is not allowed"),
    "class out of range": (["--image", "{broken_photo}", "--class", "9"], "class 9 is out of range"),
    "malicious checkpoint": (["--image", "{broken_photo}", "--checkpoint", "{evil_pickle}"], "unsupported GLOBAL"),
    "texture too small": (["--image", "{broken_photo}", "--texture-size", "10"], "--texture-size 10 is impossible"),
}


def invert(case, inputs, out):
    args, expected = INVERT[case]
    args = _fill(args, inputs, out)
    if "--load-config" not in args:
        args = ["--load-config", str(inputs["config"]), *args]
    return [str(BIN / "triplane-gan"), "invert", *args, "--output-dir", str(out), "--perceptual", "efficientnet-lite0"], expected


@pytest.mark.parametrize("case", sorted(INVERT))
def test_invert(case, inputs):
    out = _out_folder(inputs, "invert", case)
    _check(*invert(case, inputs, out), inputs=inputs, out=out)


# ---- triplane-gan eval -----------------------------------------------------------------------------------------
EVAL = {
    "unknown metric": (["--metrics", "fid,psnr"], "unknown metric psnr"),
    "truncation nan": (["--truncation", "nan"], "--truncation nan is not a finite number"),
    "too few images": (["--num-gen", "1"], "--num-gen"),
    "no nfs latents": (["--metrics", "nfs", "--num-nfs", "0"], "--num-nfs must be positive"),
    "malicious inception weights": (["--metrics", "fid", "--inception-weights", "{evil_pickle}"], "unsupported GLOBAL"),
    "malicious config": (["--load-config", "{evil_config}", "--metrics", "fd-effnetlite0"], "is not allowed"),
}


def evaluate(case, inputs, out):
    args, expected = EVAL[case]
    args = _fill(args, inputs, out)
    if "--load-config" not in args:
        args = ["--load-config", str(inputs["config"]), *args]
    return [str(BIN / "triplane-gan"), "eval", *args, "--output", str(out / "eval.json"), "--no-geometry"], expected


@pytest.mark.parametrize("case", sorted(EVAL))
def test_eval(case, inputs):
    out = _out_folder(inputs, "evaluate", case)
    _check(*evaluate(case, inputs, out), inputs=inputs, out=out)


# ---- triplane-gan prepare-dataset ------------------------------------------------------------------------------
PREPARE = {
    "missing source": (["{root}/nope", "{out}/a"], "source folder"),
    "source is an archive": (["{archive}", "{out}/a"], "is already a prepare-dataset archive"),
    "zero resolution": (["{photos}", "{out}/a", "--resolution", "0"], "--resolution and --shard-size must be positive"),
    "destination under a file": (["{photos}", "{text}/a"], "cannot write to"),
}


def prepare(case, inputs, out):
    args, expected = PREPARE[case]
    return [str(BIN / "triplane-gan"), "prepare-dataset", *_fill(args, inputs, out)], expected


@pytest.mark.parametrize("case", sorted(PREPARE))
def test_prepare_dataset(case, inputs):
    out = _out_folder(inputs, "prepare", case)
    _check(*prepare(case, inputs, out), inputs=inputs, out=out)


# ---- triplane-gan viewer ---------------------------------------------------------------------------------------
VIEWER = {
    "missing config": (["--load-config", "{root}/nope/config.yml"], "does not exist"),
    "malicious config": (["--load-config", "{evil_config}"], "is not allowed"),
    "malicious checkpoint": (["--load-config", "{config}", "--checkpoint", "{evil_pickle}"], "unsupported GLOBAL"),
}


def viewer(case, inputs, out):
    args, expected = VIEWER[case]
    return [str(BIN / "triplane-gan"), "viewer", *_fill(args, inputs, out)], expected


@pytest.mark.parametrize("case", sorted(VIEWER))
def test_viewer(case, inputs):
    out = _out_folder(inputs, "viewer", case)
    _check(*viewer(case, inputs, out), inputs=inputs, out=out)


for _build, _cases in ((ns_train, NS_TRAIN), (render, RENDER), (export_mesh, EXPORT_MESH), (invert, INVERT),
                       (evaluate, EVAL), (prepare, PREPARE), (viewer, VIEWER)):
    _build.cases = _cases
_BUILDERS = (ns_train, render, export_mesh, invert, evaluate, prepare, viewer)


def test_the_table_is_large_enough():
    assert sum(map(len, (NS_TRAIN, RENDER, EXPORT_MESH, INVERT, EVAL, PREPARE, VIEWER))) >= 40


# ---- the helpers behind some of the cases --------------------------------------------------------------------
def test_latest_checkpoint_is_the_highest_step_and_other_names_are_ignored(tmp_path):
    from triplane_gan_ns.runs import latest_checkpoint
    from triplane_gan_ns.runs import checkpoint_steps

    models = tmp_path / "nerfstudio_models"
    models.mkdir()
    for name in ("step-9.ckpt", "step-10.ckpt", "step-000000003.ckpt", "step-best.ckpt", "step-.ckpt",
                 ".step-000000011.tmp-123.ckpt", "step-12.ckpt.bak"):
        (models / name).write_bytes(b"")
    assert list(checkpoint_steps(models)) == [3, 9, 10]
    assert latest_checkpoint(tmp_path) == models / "step-10.ckpt"


def test_a_successful_write_removes_temporaries_of_dead_writers_only(tmp_path):
    from triplane_gan_ns.fileio import atomic_write

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [tmp_path / f".step-000000003.tmp-{dead.pid}.ckpt", tmp_path / f".progress.tmp-{dead.pid}.json"]
    kept = [tmp_path / f".samples-latest.tmp-{os.getpid()}.png", tmp_path / ".other.tmp-1.png",
            tmp_path / f"photo.tmp-{dead.pid}.png", tmp_path / f".notes-{dead.pid}.txt"]
    for path in stale + kept:
        path.write_bytes(b"partial")
    atomic_write(tmp_path / "a.txt", lambda tmp: tmp.write_text("done"))
    assert (tmp_path / "a.txt").read_text() == "done"
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)


def test_unreadable_weights_reasons_are_whole_sentences_without_unsafe_advice(tmp_path):
    from triplane_gan_ns.fileio import torch_load_reason

    evil = tmp_path / "evil.pt"
    torch.save({"x": _Evil(tmp_path / MARKER)}, evil)
    truncated = tmp_path / "truncated.pt"
    torch.save({"x": torch.zeros(100)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    for path in (evil, truncated):
        with pytest.raises(Exception) as err:
            torch.load(path, weights_only=True)
        reason = torch_load_reason(err.value)
        assert reason and "weights_only" not in reason and "\n" not in reason
        assert reason in str(err.value)  # a whole piece of torch's message, not cut
    assert not (tmp_path / MARKER).exists()
