"""Model-zoo export: vendoring rewrites, config rewiring, and a full export + offline verification."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from monai_lstmagan import zoo
from monai_lstmagan.checkpoints import save_generator
from monai_lstmagan.networks import LSTMAGANGenerator

TINY = {"scale": 2, "num_blocks": 1, "channels": 8, "dense_layers": 2, "growth": 8, "attention": True}


def test_rewrite_imports_covers_every_form():
    source = textwrap.dedent("""\
        import os, monai_lstmagan.data as d
        from monai_lstmagan.networks import (
            LSTMAGANGenerator,
            LSTMDiscriminator as D,
        )
        from .plots import plot_comparison
        import monai_lstmagan
        import monai_lstmagan_other


        def f():
            import monai_lstmagan.transforms
            return monai_lstmagan.transforms, "monai_lstmagan.generator/1"
        """)
    out = zoo.rewrite_imports(source)
    assert "import os\nimport scripts.monai_lstmagan.data as d" in out.replace("; ", "\n")
    assert "from scripts.monai_lstmagan.networks import LSTMAGANGenerator, LSTMDiscriminator as D" in out
    assert "from .plots import plot_comparison" in out  # relative imports need nothing
    assert "\nfrom scripts import monai_lstmagan\n" in out
    assert "import monai_lstmagan_other" in out  # another package with a common prefix is untouched
    assert "    import scripts.monai_lstmagan.transforms; from scripts import monai_lstmagan" in out
    assert '"monai_lstmagan.generator/1"' in out  # strings (e.g. the checkpoint format id) are untouched
    assert zoo.absolute_package_imports(out) == []
    compile(out, "<rewritten>", "exec")


def test_vendor_config():
    config = {
        "imports": ["$import torch", "$import monai_lstmagan", "$import monai_lstmagan.inference"],
        "net": {"_target_": "monai_lstmagan.networks.LSTMAGANGenerator", "scale": 2},
        "other": {"_target_": "CacheDataset"},
        "run": ["$monai_lstmagan.inference.run_inference(@ckpt_path)"],
    }
    out = zoo.vendor_config(config)
    assert out["imports"] == [
        "$import torch",
        "$import scripts.monai_lstmagan as monai_lstmagan",
        "$import scripts.monai_lstmagan.inference",
    ]
    assert out["net"]["_target_"] == "scripts.monai_lstmagan.networks.LSTMAGANGenerator"
    assert out["other"] == {"_target_": "CacheDataset"} and out["run"] == config["run"]


@pytest.mark.slow
def test_zoo_export_passes_its_offline_verification(tmp_path):
    torch.manual_seed(0)
    ckpt = save_generator(str(tmp_path / "model.pt"), LSTMAGANGenerator(**TINY), TINY, extra={"epoch": 3})
    summary = {
        "num_volumes": 2, "scale": 2, "split": "test",
        "metrics": {
            m: {r: {"psnr": {"mean": p, "std": 1.5, "count": 2}, "ssim": {"mean": 0.9, "std": None, "count": 2}}
                for r in ("foreground", "whole")}
            for m, p in (("bicubic", 30.0), ("sr", 31.25))
        },
    }  # fmt: skip
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "zoo" / "lstmagan_sr"
    code = zoo.main(
        ["export", "--ckpt", ckpt, "--out", str(out), "--summary", str(tmp_path / "summary.json"), "--version", "0.2.0",
         "--changelog", "tiny test export", "--notes", "random weights, for the test", "--large_file_mb", "0.02"]
    )  # fmt: skip
    assert code == 0
    for name in ("models/model.pt", "models/model.ts", "docs/README.md", "docs/data_license.txt", "LICENSE",
                 "configs/train.yaml", "configs/evaluate.yaml", "scripts/monai_lstmagan/inference/files.py"):  # fmt: skip
        assert (out / name).is_file(), name
    assert not list(out.rglob("__pycache__")), "verification left bytecode in the bundle"
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    assert meta["version"] == "0.2.0" and meta["changelog"]["0.2.0"] == "tiny test export"
    assert meta["eval_metrics"]["psnr_foreground_sr"] == 31.25
    readme = (out / "docs" / "README.md").read_text()
    assert "| sr | foreground | 31.25 ± 1.50 | 0.9000 |" in readme and "random weights, for the test" in readme
    inference = yaml.safe_load((out / "configs" / "inference.yaml").read_text())
    assert inference["network_def"]["checkpoint"] == "@ckpt_path" and "models/model.pt" in inference["ckpt_path"]
    # with a 20 kB limit the weights count as large files and are listed with their hash
    large = yaml.safe_load((out / "large_files.yml").read_text())["large_files"]
    assert {"models/model.pt", "models/model.ts"} <= {e["path"] for e in large}
    assert all(len(e["hash_val"]) == 64 and e["hash_type"] == "sha256" for e in large)
    # an existing, non-empty output folder is refused
    assert zoo.main(["export", "--ckpt", ckpt, "--out", str(out)]) == 1

    # the checks can fail: a static absolute import is caught without running anything ...
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    vendored = broken / "scripts" / "monai_lstmagan" / "inference" / "files.py"
    source = vendored.read_text()
    vendored.write_text(source + "\nfrom monai_lstmagan import data as _installed_data  # noqa\n")
    assert any("still imports the installed" in f for f in zoo.check_layout(broken, 0.02))
    # ... and a dynamic import of the installed package is blocked in the isolated processes
    vendored.write_text(source + "\nimport importlib\n_installed = importlib.import_module('monai_lstmagan.data')\n")
    result = zoo.run_isolated(broken, broken, True, "code", "import scripts.monai_lstmagan.inference")
    assert result.returncode != 0 and "blocked" in result.stderr


def test_export_refuses_a_checkpoint_of_another_scale_summary(tmp_path):
    torch.manual_seed(0)
    ckpt = save_generator(str(tmp_path / "model.pt"), LSTMAGANGenerator(**TINY), TINY)
    (tmp_path / "summary.json").write_text(json.dumps({"scale": 4, "metrics": {}}))
    with pytest.raises(ValueError, match="x4"):
        zoo.export_bundle(ckpt, str(tmp_path / "out"), summary_file=str(tmp_path / "summary.json"))
    with pytest.raises(FileNotFoundError, match="bundle_dir"):
        zoo.export_bundle(ckpt, str(tmp_path / "out"), bundle_dir=str(tmp_path))
    assert not Path(tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_shipped_model_export_reports_its_recipes_held_out_numbers(tmp_path):
    """The README of an export of a shipped file carries the leave-one-patient-out table of its recipe (one column per
    method of ``templates/shipped_performance.json``), its metadata the recipe's and bicubic's numbers; any other
    file gets none of them."""
    from monai_lstmagan.pretrained import pretrained_model_path
    from monai_lstmagan.zoo.export import _shipped_eval_metrics, _shipped_performance, _shipped_table

    for scale in (2, 4):
        performance = _shipped_performance(pretrained_model_path(scale), scale)
        table = _shipped_table(performance).splitlines()
        assert len(table) == 2 + len(performance["rows"])
        assert all(line.count("|") == 2 + len(performance["methods"]) for line in table)
        metrics = _shipped_eval_metrics(performance)
        for row in performance["rows"]:
            recipe, bicubic = row[performance["recipe"]], row["bicubic"]
            assert metrics[f"heldout_{row['direction']}_foreground_psnr_lstmagan"] == recipe[0] > bicubic[0]
            assert f"| {row['label']} | {bicubic[0]:.2f} / {bicubic[1]:.4f} |" in "\n".join(table)
    torch.manual_seed(0)
    other = save_generator(str(tmp_path / "model.pt"), LSTMAGANGenerator(**TINY), TINY)
    assert _shipped_performance(other, 2) is None
