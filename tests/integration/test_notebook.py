"""The walkthrough notebook runs top to bottom (on a small subset of bottle), as CI executes it."""

import sys

import nbformat
import pytest

from helpers import ROOT

pytestmark = pytest.mark.slow
NOTEBOOK = ROOT / "notebooks" / "enroll_a_new_product.ipynb"


def test_enroll_a_new_product_notebook_executes(small_bottle, tmp_path):
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source = (f"data_dir = {str(small_bottle)!r}\nout_dir = {str(tmp_path / 'bundle')!r}\n"
                     f"product_file = '../products/bottle.yaml'\n"
                     "overrides = {'tracking.enabled': False, 'model.input_size': 128, "
                     "'enroll.min_good_images': 20}\n")
    # the kernel is this interpreter (the project's venv), whatever `python` is on PATH
    km = KernelManager(kernel_name="python3")
    km.kernel_cmd = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    client = NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "bank " in outputs and "image_auroc" in outputs and "target FRR" in outputs
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images >= 3  # the data, the scores and the trade-off are plotted
    assert (tmp_path / "bundle" / "manifest.json").is_file()
