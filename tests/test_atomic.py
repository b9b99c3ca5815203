"""One atomic writer (monai_lstmagan.io.atomic) and output folders that are checked before any work."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest
import torch

from monai_lstmagan.checkpoints import atomic_save
from monai_lstmagan.evaluation import evaluate
from monai_lstmagan.inference import run_inference
from monai_lstmagan.io import check_output_dir
from monai_lstmagan.io.atomic import atomic_files, atomic_write, default_file_mode


def test_atomic_write_replaces_on_success_and_leaves_the_old_file_on_failure(tmp_path):
    path = tmp_path / "sub" / "datalist.json"
    with atomic_write(path, "w") as f:
        f.write("first")
    assert path.read_text() == "first"
    assert stat.S_IMODE(path.stat().st_mode) == default_file_mode()  # not the 0600 of a temporary file
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_write(path, "w") as f:
            f.write("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "first" and sorted(p.name for p in path.parent.iterdir()) == ["datalist.json"]


def test_checkpoints_get_the_usual_file_mode(tmp_path):
    path = atomic_save({"w": torch.ones(2)}, tmp_path / "model.pt")
    assert stat.S_IMODE(os.stat(path).st_mode) == default_file_mode()
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))


def test_atomic_files_moves_the_header_last_and_never_replaces_an_input(tmp_path):
    inputs = tmp_path / "scan.raw"
    inputs.write_bytes(b"input")
    with atomic_files(str(tmp_path), last="out.mhd") as tmp_dir:
        for name in ("out.mhd", "out.raw"):
            Path(tmp_dir, name).write_text(name)
    assert (tmp_path / "out.mhd").read_text() == "out.mhd" and (tmp_path / "out.raw").is_file()
    with pytest.raises(ValueError, match="refusing to overwrite the input file.*scan.raw"):
        with atomic_files(str(tmp_path), protected=[str(inputs)]) as tmp_dir:
            Path(tmp_dir, "scan.raw").write_bytes(b"output")
            Path(tmp_dir, "other.txt").write_text("not moved either")
    assert inputs.read_bytes() == b"input" and not (tmp_path / "other.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".lstmagan-")]  # temporary folder removed


def _fails_with_permission_error_as_unprivileged_user(work) -> str:
    """Run ``work()`` in a forked child that cannot write (uid 'nobody' when the tests run as root, where
    chmod alone would not stop it); returns the child's PermissionError message ('' if none was raised)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: everything it needs is imported already
        os.close(read_fd)
        code = 0
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            work()
        except PermissionError as e:
            os.write(write_fd, str(e).encode())
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            os.write(write_fd, f"UNEXPECTED {type(e).__name__}: {e}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        message = f.read().decode()
    os.waitpid(pid, 0)
    return message


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork (POSIX)")
@pytest.mark.parametrize("command", ["check_output_dir", "inference", "evaluation"])
def test_a_read_only_output_folder_is_a_clear_error_before_any_work(command):
    base = Path(tempfile.mkdtemp(prefix="lstmagan-perm-", dir="/tmp"))  # outside root's private tmp_path
    try:
        base.chmod(0o755)
        read_only = base / "read_only"
        read_only.mkdir()
        read_only.chmod(0o555)  # a real permission failure: no file in the way, the folder exists
        out = read_only / "out"
        missing = str(base / "no_model.pt")  # would fail later: the folder check must come first
        work = {
            "check_output_dir": lambda: check_output_dir(str(out)),
            "inference": lambda: run_inference(missing, str(out), inputs=[str(base)], progress=False),
            "evaluation": lambda: evaluate(missing, str(out), dataset_dir=str(base), progress=False),
        }[command]
        message = _fails_with_permission_error_as_unprivileged_user(work)
        assert message.startswith(f"output folder '{out}' cannot be created or written"), message
        assert "Permission denied" in message and not out.exists()
    finally:
        (base / "read_only").chmod(0o755)
        for p in sorted(base.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        base.rmdir()
