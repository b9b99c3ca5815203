# Bootstrap of every isolated check process of monai_lstmagan.zoo: verify.run_isolated runs it as
# ``python -I -B -c <this file's text> BUNDLE_DIR ADD_ROOT MODE PAYLOAD...`` (ADD_ROOT "1"/"0": put BUNDLE_DIR on
# sys.path; MODE "module": run the module PAYLOAD[0] with arguments PAYLOAD[1:]; "code": exec PAYLOAD[0] with the
# global BUNDLE and sys.argv ["<zoo-check>", *PAYLOAD[1:]]; "path": run the script PAYLOAD[0] with arguments
# PAYLOAD[1:], its folder first on sys.path as ``python SCRIPT`` has it; "code-in": like "code" with the folder
# PAYLOAD[0] first on sys.path and the code in PAYLOAD[1]). Importing the installed monai_lstmagan raises
# ModuleNotFoundError; at exit the process prints the files of the modules it loaded from scripts/ as
# ZOO_VENDORED_MODULES=<JSON list>.

import atexit
import importlib.abc
import json
import os
import runpy
import sys

bundle_dir, add_root, mode, payload = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4:]


class _BlockInstalledPackage(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "monai_lstmagan" or fullname.startswith("monai_lstmagan."):
            raise ModuleNotFoundError(
                f"import of {fullname!r} blocked: the exported bundle may only use its vendored scripts/ copy"
            )
        return None


sys.meta_path.insert(0, _BlockInstalledPackage())
if add_root:
    sys.path.insert(0, bundle_dir)


def _report():
    files = sorted(
        {
            os.path.realpath(m.__file__)
            for n, m in list(sys.modules.items())
            if (n == "scripts" or n.startswith("scripts.")) and getattr(m, "__file__", None)
        }
    )
    print("ZOO_VENDORED_MODULES=" + json.dumps(files), flush=True)


atexit.register(_report)
if mode == "module":
    sys.argv = [payload[0]] + payload[1:]
    runpy.run_module(payload[0], run_name="__main__", alter_sys=True)
elif mode == "path":
    sys.argv = [payload[0]] + payload[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(payload[0])))
    runpy.run_path(payload[0], run_name="__main__")
elif mode == "code-in":
    sys.argv = ["<zoo-check>"] + payload[2:]
    sys.path.insert(0, payload[0])
    exec(compile(payload[1], "<zoo-check>", "exec"), {"__name__": "__main__", "BUNDLE": bundle_dir})
else:
    sys.argv = ["<zoo-check>"] + payload[1:]
    exec(compile(payload[0], "<zoo-check>", "exec"), {"__name__": "__main__", "BUNDLE": bundle_dir})
