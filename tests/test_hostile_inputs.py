"""The hostile cases of issue 20, each through the command a user runs (``lstmagan-sr`` via ``cli.main``; the
training start-up scan ``check_volumes`` and the ``LoadVolumed`` transform where the file enters training).

Every refusal is checked the same way (:func:`_refused`): exit status 1, one line naming the file and the problem,
no output and no ``.lstmagan-*`` temporary folder left, and every input file byte-identical (sha256 before and
after). The table of these cases and what happens is ``docs/hostile_inputs.md``.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from volume_factory import ct_volume, mr_volume, nifti_affine, write_mhd, write_nifti

import monai_lstmagan.inference.files as files_module
from monai_lstmagan.checkpoints import save_generator
from monai_lstmagan.cli import EXIT_INTERRUPTED, EXIT_TERMINATED, main
from monai_lstmagan.data import check_volumes, find_volumes
from monai_lstmagan.io.atomic import TEMPORARY_PREFIX
from monai_lstmagan.io.scans import read_scan
from monai_lstmagan.networks import LSTMAGANGenerator
from monai_lstmagan.transforms.intensity import LoadVolumed

REPO = Path(__file__).resolve().parents[1]
TINY = {"scale": 2, "num_blocks": 1, "channels": 4, "dense_layers": 1, "growth": 4}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    torch.manual_seed(0)
    return save_generator(tmp_path_factory.mktemp("model") / "model.pt", LSTMAGANGenerator(**TINY), TINY)


def _hashes(*folders: Path) -> dict[str, str]:
    """sha256 of every file under ``folders`` (the inputs of a case)."""
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in folders
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


def _leftovers(out: Path, inputs: dict[str, str] | None = None) -> list[str]:
    """What a run left in ``out`` that is not one of the ``inputs`` (paths of :func:`_hashes`): outputs and
    temporary folders of this tool."""
    if not out.exists():
        return []
    return sorted(p.name for p in out.iterdir() if str(p) not in (inputs or {}))


def _refused(capsys, argv: list[str], inputs: list[Path], out: Path, *patterns: str) -> str:
    """Run ``lstmagan-sr argv``; assert exit 1, one error line matching every pattern, nothing written, inputs intact."""
    before = _hashes(*inputs)
    assert main([*argv, "-o", str(out), "--no-progress"]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("lstmagan-sr: error: "), error
    for pattern in patterns:
        assert re.search(pattern, error), (pattern, error)
    assert _hashes(*inputs) == before
    assert _leftovers(out, before) == [], _leftovers(out, before)
    return error


def _training_refuses(path: str, pattern: str) -> None:
    """The training entry points (start-up scan and loader) refuse ``path`` naming it and the problem."""
    with pytest.raises(ValueError) as scan_error:
        check_volumes([{"image": path}])
    assert path in str(scan_error.value) and re.search(pattern, str(scan_error.value)), str(scan_error.value)
    with pytest.raises(ValueError) as load_error:
        LoadVolumed("image")({"image": path})
    assert path in str(load_error.value) and re.search(pattern, str(load_error.value)), str(load_error.value)


def _rewrite(path: str, old: str, new: str) -> str:
    text = Path(path).read_text()
    assert re.search(old, text), (old, text)
    Path(path).write_text(re.sub(old, new, text))
    return path


# ---------------------------------------------------------------- data lost or corrupted (cases 1-5)


def test_case01_a_header_naming_its_data_file_after_an_unknown_key_is_protected(tmp_path, capsys, model):
    d = tmp_path / "d"
    d.mkdir()
    header = write_mhd(d / "c.mhd", ct_volume())
    os.rename(d / "c.raw", d / "c_sr.raw")  # the data file has the name the output's data file would get
    _rewrite(header, r"ElementDataFile = c\.raw", "Old_ElementDataFile = zzz.raw\nElementDataFile = c_sr.raw")
    assert read_scan(header).array.shape == (24, 20, 10)  # the reader finds its data in c_sr.raw
    _refused(capsys, [header], [d], d, r"c_sr\.raw", "would replace the input file", "c.mhd")


def test_case02_an_input_is_never_replaced_by_another_inputs_output(tmp_path, capsys, model):
    d = tmp_path / "d"
    d.mkdir()
    a, a_sr = write_nifti(d / "a.nii.gz", mr_volume()), write_nifti(d / "a_sr.nii.gz", mr_volume(seed=1))
    _refused(capsys, [a, a_sr, "--model", model], [d], d, r"a_sr\.nii\.gz", "would replace the input file")


def test_case03_two_inputs_with_one_output_name_are_refused(tmp_path, capsys, model):
    d1, d2, out = tmp_path / "d1", tmp_path / "d2", tmp_path / "out"
    d1.mkdir(), d2.mkdir()
    first, second = write_nifti(d1 / "a.nii.gz", mr_volume()), write_nifti(d2 / "a.nii.gz", mr_volume(seed=1))
    _refused(capsys, [first, second, "--model", model], [d1, d2], out, "d1/a.nii.gz", "d2/a.nii.gz", "both be written")


def _zraw_random(d: Path) -> str:
    header = write_mhd(d / "random.mhd", ct_volume(), compressed=True)
    size = os.path.getsize(d / "random.zraw")
    (d / "random.zraw").write_bytes(np.random.default_rng(0).bytes(size))
    return header


def _zraw_truncated(d: Path) -> str:
    header = write_mhd(d / "truncated.mhd", ct_volume(), compressed=True)
    stream = (d / "truncated.zraw").read_bytes()
    (d / "truncated.zraw").write_bytes(stream[: len(stream) // 2])
    return _rewrite(header, r"CompressedDataSize = \d+", f"CompressedDataSize = {len(stream) // 2}")


def _zraw_too_short(d: Path) -> str:
    header = write_mhd(d / "short.mhd", ct_volume(), compressed=True)
    (d / "short.zraw").write_bytes(zlib.compress(np.zeros(100, np.int16).tobytes()))  # a valid, too short stream
    return _rewrite(header, r"CompressedDataSize = \d+\n", "")


@pytest.mark.parametrize(
    "make, pattern",
    [
        (_zraw_random, r"'random\.zraw' is not a valid zlib stream"),
        (_zraw_truncated, r"'truncated\.zraw' ends early \(truncated\): \d+ bytes inflated, 9600 expected"),
        (_zraw_too_short, r"'short\.zraw' is complete but too short: 200 bytes inflated, 9600 expected"),
    ],
    ids=["random", "truncated", "too-short"],
)
def test_case04_a_corrupt_compressed_metaimage_is_refused_everywhere(tmp_path, capsys, model, make, pattern):
    d = tmp_path / "d"
    d.mkdir()
    header = make(d)
    _refused(capsys, [header, "--model", model], [d], tmp_path / "out", re.escape(header), pattern)
    _training_refuses(header, pattern)


def test_case05_a_symlink_loop_in_a_dataset_folder_is_walked_once(tmp_path, capsys, model):
    ds = tmp_path / "ds"
    (ds / "mr").mkdir(parents=True)
    write_nifti(ds / "mr" / "a.nii.gz", mr_volume((16, 12, 3)))
    write_nifti(ds / "mr" / "b.nii.gz", mr_volume((16, 12, 3), seed=1))
    os.symlink("..", ds / "mr" / "loop")
    with pytest.warns(UserWarning, match="loop.*already searched"):
        items = find_volumes(ds)
    assert sorted(Path(i["image"]).name for i in items) == ["a.nii.gz", "b.nii.gz"]
    before, out = _hashes(ds), tmp_path / "out"
    with pytest.warns(UserWarning, match="already searched"):
        assert main([str(ds), "-o", str(out), "--model", model, "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_sr.nii.gz", "b_sr.nii.gz"]
    assert _hashes(ds) == before


# ---------------------------------------------------------------- bad headers (cases 6-10, 15)


def _nifti_with(path: Path, change) -> str:
    """An uncompressed NIfTI of ``mr_volume()`` whose header fields are set by ``change(header)`` and written
    as they are (``nib.save`` would repair some of them)."""
    image = nib.Nifti1Image(mr_volume(), nifti_affine())
    header = image.header
    header["scl_slope"], header["scl_inter"] = 1.0, 0.0
    change(header)
    with open(path, "wb") as f:
        header.write_to(f)
        f.seek(int(header["vox_offset"]))
        f.write(np.asarray(mr_volume(), dtype=header.get_data_dtype()).tobytes(order="F"))
    return str(path)


def _rgb24(path: Path) -> str:
    rgb = np.zeros((24, 20, 10), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = np.arange(24, dtype=np.uint8)[:, None, None]
    nib.save(nib.Nifti1Image(rgb, nifti_affine()), str(path))
    return str(path)


def _complex64(path: Path) -> str:
    nib.save(nib.Nifti1Image(mr_volume().astype(np.complex64) * (1 + 1j), nifti_affine()), str(path))
    return str(path)


def _set(**fields):
    def change(header):
        for name, value in fields.items():
            if name.startswith("srow_") and isinstance(value, tuple):
                row = np.array(header[name], float)
                row[value[0]] = value[1]
                header[name] = row
            elif name.startswith("pixdim"):
                pixdim = np.array(header["pixdim"], float)
                pixdim[int(name[-1])] = value
                header["pixdim"] = pixdim
            else:
                header[name] = value

    return change


HEADER_CASES = {
    "06 RGB24": (lambda p: _rgb24(Path(f"{p}.gz")), r"RGB colour voxels \(datatype = 128\).*scalar"),
    "07 complex64": (lambda p: _complex64(Path(f"{p}.gz")), r"complex voxels \(complex64.*imaginary part"),
    "08 NaN in the sform": (lambda p: _nifti_with(p, _set(srow_y=(1, np.nan))), r"non-finite sform: srow_y"),
    "08 NaN in the qform": (
        lambda p: _nifti_with(p, _set(sform_code=0, qform_code=1, quatern_c=np.nan)),
        r"non-finite qform: quatern_c = nan",
    ),
    "08 NaN in pixdim": (lambda p: _nifti_with(p, _set(pixdim2=np.nan)), r"non-finite voxel size pixdim\[2\] = nan"),
    "08 singular sform": (lambda p: _nifti_with(p, _set(srow_x=np.zeros(4))), r"singular sform \(srow_x/y/z"),
    "09 Inf in the sform offset": (lambda p: _nifti_with(p, _set(srow_z=(3, np.inf))), r"non-finite sform: srow_z"),
    "10 scl_slope 1e38": (
        lambda p: _nifti_with(p, _set(scl_slope=1e38)),
        r"scl_slope = 1e\+38.*int16 voxels scale to values up to 3\.28e\+42, beyond the float32 range",
    ),
    "15 DimSize 0": (
        lambda p: _rewrite(write_mhd(p.with_suffix(".mhd"), ct_volume()), "DimSize = 24 20 10", "DimSize = 24 20 0"),
        r"is an empty image \(DimSize = 24 20 0",
    ),
    "15 dim 0 (NIfTI)": (lambda p: _nifti_with(p, _set(dim=[3, 24, 20, 0, 1, 1, 1, 1])), r"empty image \(dim\[3\] = 0"),
}


@pytest.mark.parametrize("case", sorted(HEADER_CASES))
def test_cases06_to_10_and_15_a_bad_header_names_the_file_and_the_field(tmp_path, capsys, model, case):
    d = tmp_path / "d"
    d.mkdir()
    make, pattern = HEADER_CASES[case]
    path = make(d / "scan.nii")
    _refused(capsys, [path, "--model", model], [d], tmp_path / "out", re.escape(path), pattern)
    _training_refuses(path, pattern)


def test_case15_a_model_that_is_not_a_regular_file(tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    scan = write_nifti(d / "a.nii.gz", mr_volume())
    _refused(capsys, [scan, "--model", os.devnull], [d], tmp_path / "out", "'/dev/null' is not a regular file")
    _refused(capsys, [scan, "--model", str(d)], [d], tmp_path / "out", f"'{d}' is not a regular file")


def test_an_input_that_is_not_a_regular_file(tmp_path, capsys, model):
    d = tmp_path / "d"
    d.mkdir()
    os.mkfifo(d / "pipe.nii.gz")  # reading it would block forever
    _refused(
        capsys, [str(d / "pipe.nii.gz"), "--model", model], [], tmp_path / "out", "pipe.nii.gz", "not a regular file"
    )
    with pytest.raises(ValueError, match="pipe.nii.gz.*not a regular file"):
        check_volumes([{"image": str(d / "pipe.nii.gz")}])


# ---------------------------------------------------------------- models (case 11) and a code-executing pickle


def _model_recording(tmp_path: Path, model: str, **changes) -> str:
    state = torch.load(model, weights_only=True)
    state._metadata["monai_lstmagan"]["generator"].update(changes)
    path = tmp_path / "hostile.pt"
    torch.save(state, path)
    return str(path)


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"num_blocks": 10**6}, r"num_blocks = 1000000, outside the sane range 1\.\.256"),
        ({"channels": -3}, r"channels = -3, outside the sane range"),
        ({"growth": 1.5}, r"growth = 1\.5, outside the sane range"),
        ({"beta": float("nan")}, r"beta = nan, outside the sane range"),
        ({"channels": 512, "growth": 512}, r"weights do not match the recorded architecture.*of another shape"),
    ],
    ids=["num_blocks", "channels", "growth", "beta", "within-bounds-but-not-the-file"],
)
def test_case11_recorded_architecture_values_are_bounded_before_building(tmp_path, capsys, model, changes, pattern):
    d = tmp_path / "d"
    d.mkdir()
    scan = write_nifti(d / "a.nii.gz", mr_volume())
    hostile = _model_recording(tmp_path, model, **changes)
    _refused(
        capsys, [scan, "--model", hostile], [d, Path(hostile).parent], tmp_path / "out", re.escape(hostile), pattern
    )


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_code_executing_pickle_is_refused_without_running_it(tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    scan = write_nifti(d / "a.nii.gz", mr_volume())
    payload = _RunsCode()
    payload.marker = str(tmp_path / "pwned")
    torch.save({"state_dict": payload}, tmp_path / "evil.pt")
    _refused(capsys, [scan, "--model", str(tmp_path / "evil.pt")], [d], tmp_path / "out", "evil.pt", "cannot be read")
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------- failed and interrupted writes (cases 12-14)


def _partial_write_then(action):
    """A stand-in for ``ScanWriter`` that leaves a partial file in the temporary folder, then does ``action()``."""

    def writer(path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"partial")
        action()

    return writer


def _raise_enospc():
    raise OSError(errno.ENOSPC, "No space left on device")


def test_case12_a_full_disk_names_the_output_file(tmp_path, capsys, model, monkeypatch):
    d = tmp_path / "d"
    d.mkdir()
    scan = write_nifti(d / "a.nii.gz", mr_volume())
    monkeypatch.setattr(files_module, "ScanWriter", _partial_write_then(_raise_enospc))
    out = tmp_path / "out"
    _refused(capsys, [scan, "--model", model], [d], out, re.escape(str(out / "a_sr.nii.gz")), "No space left on device")


_SCRIPT = textwrap.dedent("""
    import os, resource, signal, sys, time
    import monai_lstmagan.inference.files as files
    from monai_lstmagan.cli import main

    mode, marker = sys.argv[1], sys.argv[2]
    if mode == "fsize":  # every write of this process beyond 16 KiB fails (EFBIG), as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))
    else:  # the write of the output hangs after a partial file, until a signal comes
        def slow_writer(path, *args, **kwargs):
            with open(path, "wb") as f:
                f.write(b"partial")
            open(marker, "w").close()
            time.sleep(300)

        files.ScanWriter = slow_writer
    sys.exit(main(sys.argv[3:]))
    """)


def _start(tmp_path: Path, mode: str, argv: list[str]) -> tuple[subprocess.Popen, Path]:
    script, marker = tmp_path / "run.py", tmp_path / "writing"
    script.write_text(_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, str(script), mode, str(marker), *argv, "--no-progress"],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return process, marker


def _wait_for(marker: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the output write never started"
        time.sleep(0.1)


@pytest.mark.parametrize("suffix", [".nii", ".mhd"])  # nibabel raises OSError, ITK a RuntimeError
def test_case12_a_write_that_fails_in_a_real_process_names_the_output_file(tmp_path, model, suffix):
    d, out = tmp_path / "d", tmp_path / "out"
    d.mkdir()
    # the output (38 KiB of voxels, uncompressed) is beyond the limit
    scan = write_nifti(d / "a.nii", ct_volume()) if suffix == ".nii" else write_mhd(d / "a.mhd", ct_volume())
    before = _hashes(d)
    process, _ = _start(tmp_path, "fsize", [scan, "-o", str(out), "--model", model])
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr
    last = stderr.strip().splitlines()[-1]
    assert f"cannot write the output '{out / ('a_sr' + suffix)}'" in last and "File too large" in last, last
    assert _leftovers(out) == [] and _hashes(d) == before


def test_case13_a_temporary_folder_left_by_sigkill_is_removed_by_the_next_run(tmp_path, model):
    d, out = tmp_path / "d", tmp_path / "out"
    d.mkdir()
    scan = write_nifti(d / "a.nii.gz", mr_volume())
    before = _hashes(d)
    process, marker = _start(tmp_path, "hang", [scan, "-o", str(out), "--model", model])
    _wait_for(marker, process)
    process.kill()
    process.communicate(timeout=60)
    left = [p for p in out.iterdir() if p.name.startswith(TEMPORARY_PREFIX)]
    assert len(left) == 1 and (left[0] / "a_sr.nii.gz").read_bytes() == b"partial"  # what SIGKILL leaves
    # folders that are not stale temporaries of this tool stay: a live process's, and one of another name
    live = out / f"{TEMPORARY_PREFIX}{left[0].name.split('-')[1]}-{os.getpid()}-live"
    live.mkdir()
    (out / ".lstmagan-notes.txt").write_text("not a temporary folder")
    os.utime(left[0], (time.time() - 5, time.time() - 5))
    with pytest.warns(UserWarning, match="temporary folder of an earlier run"):
        assert main([scan, "-o", str(out), "--model", model, "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".lstmagan-notes.txt", live.name, "a_sr.nii.gz"]
    assert read_scan(str(out / "a_sr.nii.gz")).array.shape == (48, 40, 10)
    assert _hashes(d) == before


def test_case14_sigint_from_outside_exits_130_with_nothing_partial(tmp_path, model):
    d, out = tmp_path / "d", tmp_path / "out"
    d.mkdir()
    scan = write_nifti(d / "a.nii.gz", mr_volume())
    before = _hashes(d)
    process, marker = _start(tmp_path, "hang", [scan, "-o", str(out), "--model", model])
    _wait_for(marker, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == EXIT_INTERRUPTED == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("lstmagan-sr: interrupted")
    assert _leftovers(out) == [] and _hashes(d) == before


@pytest.mark.parametrize(
    "signum, status, words", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_case14_a_signal_during_a_write_keeps_finished_outputs_and_leaves_nothing_partial(
    tmp_path, capsys, model, monkeypatch, signum, status, words
):
    d, out = tmp_path / "d", tmp_path / "out"
    d.mkdir()
    first, second = write_nifti(d / "a.nii.gz", mr_volume()), write_nifti(d / "b.nii.gz", mr_volume(seed=1))
    before = _hashes(d)
    real_writer = files_module.ScanWriter
    writes = []

    def writer(path, *args, **kwargs):  # the first output is written, the second is interrupted
        writes.append(path)
        if len(writes) == 1:
            return real_writer(path, *args, **kwargs)
        return _partial_write_then(lambda: signal.raise_signal(signum))(path)

    monkeypatch.setattr(files_module, "ScanWriter", writer)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert main([first, second, "-o", str(out), "--model", model, "--no-progress"]) == status
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # restored
    assert status == (EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_TERMINATED)
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"lstmagan-sr: {words}") and len(error.splitlines()) == 1, error
    assert _leftovers(out) == ["a_sr.nii.gz"] and read_scan(str(out / "a_sr.nii.gz")).array.shape == (48, 40, 10)
    assert _hashes(d) == before


# ---------------------------------------------------------------- what worked before still works


def _nifti_of(dtype: str, shape=(24, 20, 10), big_endian: bool = False):
    def make(path: Path) -> str:
        values = mr_volume(shape).astype(np.float64) / 10.0  # 0..120: fits every type from int8 up
        header = nib.Nifti1Header(endianness=">" if big_endian else "<")
        header.set_data_dtype(dtype)
        nib.save(nib.Nifti1Image(values.astype(dtype), nifti_affine(), header=header), str(path))
        assert (open(path, "rb").read(4) if path.suffix == ".nii" else gzip.open(path).read(4)) == (
            b"\x00\x00\x01\x5c" if big_endian else b"\x5c\x01\x00\x00"
        )  # sizeof_hdr 348 in the byte order asked for
        return str(path)

    return make


GOOD_CASES = {
    **{t: _nifti_of(t) for t in ("int8", "uint8", "int16", "uint16", "int32", "float32", "float64")},
    "big-endian int16": _nifti_of("int16", big_endian=True),
    "1 slice": _nifti_of("int16", (24, 20, 1)),
    "2 slices": _nifti_of("int16", (24, 20, 2)),
    "3 slices": _nifti_of("int16", (24, 20, 3)),
    "scl_slope 0": lambda p: _nifti_with(p.with_suffix(""), _set(scl_slope=0.0)),
    "4D (first volume)": lambda p: write_nifti(p, np.stack([mr_volume(seed=s) for s in range(2)], axis=-1)),
}


@pytest.mark.parametrize("case", sorted(GOOD_CASES))
def test_what_worked_before_still_works(tmp_path, model, case):
    d, out = tmp_path / "d", tmp_path / "out"
    d.mkdir()
    path = GOOD_CASES[case](d / "scan.nii.gz")
    source, before = read_scan(path), _hashes(d)
    assert main([path, "-o", str(out), "--model", model, "--no-progress"]) == 0
    result = read_scan(str(out / os.path.basename(path).replace(".nii", "_sr.nii")))
    assert result.array.shape[:2] == (source.array.shape[0] * 2, source.array.shape[1] * 2)
    assert result.dtype.newbyteorder("=") == source.dtype.newbyteorder("=")
    assert _hashes(d) == before and not [p for p in out.iterdir() if p.name.startswith(TEMPORARY_PREFIX)]
