# Config, metadata, network and TorchScript checks of monai_lstmagan.zoo.verify_bundle: run as MODE "code" by
# bootstrap.py, which sets the global BUNDLE (the bundle folder, also the working directory and on sys.path, so
# that the vendored scripts.monai_lstmagan imports).

import ast
import glob
import importlib
import os

import torch
from monai.bundle import ConfigParser, verify_metadata, verify_net_in_out
from monai.utils import optional_import
from scripts.monai_lstmagan.checkpoints import load_generator

BUNDLE = globals().get("BUNDLE") or os.getcwd()
configs = sorted(glob.glob(os.path.join(BUNDLE, "configs", "*.yaml")))


def walk(node, found):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str) and value.startswith("scripts."):
                found.add(("target", value))
            else:
                walk(value, found)
    elif isinstance(node, list):
        for value in node:
            walk(value, found)
    elif isinstance(node, str) and node.strip().startswith(("$import ", "$from ")):
        found.add(("import", node.strip()[1:]))


for path in configs:
    found = set()
    walk(ConfigParser.load_config_file(path), found)
    for kind, value in sorted(found):
        if kind == "import":  # resolved the way MONAI's ConfigExpression does it
            node = ast.parse(value).body[0]
            if isinstance(node, ast.ImportFrom):
                _, ok = optional_import(node.module, name=node.names[0].name)
            else:
                _, ok = optional_import(node.names[0].name)
            assert ok, f"{os.path.basename(path)}: '{value}' does not resolve"
        else:
            module_name, _, attribute = value.rpartition(".")
            getattr(importlib.import_module(module_name), attribute)
    print(f"config ok: {os.path.basename(path)} ({len(found)} imports/targets)")

schema = os.path.join(BUNDLE, "scripts", "monai_lstmagan", "resources", "meta_schema_20240725.json")
meta = os.path.join(BUNDLE, "configs", "metadata.json")
inference = os.path.join(BUNDLE, "configs", "inference.yaml")
verify_metadata(meta_file=meta, filepath=schema)
print("verify_metadata ok")
verify_net_in_out(net_id="network_def", meta_file=meta, config_file=inference, bundle_root=BUNDLE, device="cpu", n=2)
print("verify_net_in_out ok")

eager, _ = load_generator(os.path.join(BUNDLE, "models", "model.pt"))
shipped = torch.jit.load(os.path.join(BUNDLE, "models", "model.ts"))
torch.manual_seed(0)
for shape in [(2, 1, 16, 16), (1, 1, 13, 21)]:
    x = torch.rand(shape)
    with torch.no_grad():
        expected = eager(x)
        for name, net in (("models/model.ts", shipped),):
            diff = float((net(x) - expected).abs().max())
            assert diff < 1e-4, f"{name} differs from the eager generator by {diff}"
print("torchscript ok")
