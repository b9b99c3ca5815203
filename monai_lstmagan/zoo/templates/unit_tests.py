# The unit-test pattern of the model zoo's ci/unit_tests/test_brats_mri_segmentation.py on an exported bundle, run
# by monai_lstmagan.zoo.ci as MODE "code" of bootstrap.py: ``... WORKFLOW WORK_DIR`` with WORKFLOW "train" or
# "infer". The bundle folder (the global BUNDLE) and the model zoo's ci/unit_tests/ (check_workflow) are on
# sys.path. Synthetic CT volumes go to WORK_DIR/data; a ConfigWorkflow with the zoo's overrides is checked with
# check_workflow(..., check_properties=True) (initialize, check_properties, run, finalize).

import os
import sys

import nibabel as nib
import numpy as np
from monai.bundle import ConfigWorkflow
from utils import check_workflow

BUNDLE = globals().get("BUNDLE") or os.getcwd()
workflow_type, work_dir = sys.argv[1], sys.argv[2]
dataset_dir = os.path.join(work_dir, "data")
os.makedirs(dataset_dir, exist_ok=True)
rng = np.random.default_rng(0)
grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in (32, 32, 12)], indexing="ij")
body = (grid[0] / 0.8) ** 2 + (grid[1] / 0.7) ** 2 < 1
for index in range(2):  # two patients: one trains, one validates
    volume = np.where(body, 40 + 300 * np.cos(3 * grid[0] + index) * np.sin(2 * grid[1]), -1000)
    volume = (volume + rng.normal(0, 10, volume.shape)).astype(np.int16)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    nib.save(nib.Nifti1Image(volume, affine), os.path.join(dataset_dir, f"ct{index}.nii.gz"))

configs = os.path.join(BUNDLE, "configs")
common = {"logging_file": os.path.join(configs, "logging.conf"), "meta_file": os.path.join(configs, "metadata.json")}
if workflow_type == "train":
    override = {
        "bundle_root": BUNDLE, "dataset_dir": dataset_dir, "output_dir": os.path.join(work_dir, "train"),
        "epochs": 1, "samples_per_volume": 2, "batch_size": 1, "num_slices": 4, "crop_size": 16, "num_workers": 0,
        "generator_kwargs#num_blocks": 1, "generator_kwargs#channels": 8, "generator_kwargs#growth": 4,
        "generator_kwargs#dense_layers": 2, "lstm_critic_kwargs#encoder_channels": [8],
        "lstm_critic_kwargs#hidden_size": 8, "perceptual_layer": "relu1_2",
    }  # fmt: skip
    trainer = ConfigWorkflow(
        workflow_type="train", config_file=os.path.join(configs, "train.yaml"), **common, **override
    )
    check_workflow(trainer, check_properties=True)
    produced = os.path.join(work_dir, "train", "model.pt")
else:
    override = {
        "bundle_root": BUNDLE, "dataset_dir": dataset_dir, "output_dir": os.path.join(work_dir, "infer"),
        "handlers#0#_disabled_": True, "progress": False,
    }  # fmt: skip
    inferrer = ConfigWorkflow(
        workflow_type="infer", config_file=os.path.join(configs, "inference.yaml"), **common, **override
    )
    check_workflow(inferrer, check_properties=True)
    produced = os.path.join(work_dir, "infer", "ct1_sr.nii.gz")
assert os.path.isfile(produced), f"the {workflow_type} workflow ran but wrote no {produced}"
print(f"ZOO_UNIT_TEST_OK {workflow_type}: wrote {produced}")
