"""serving/ never imports the training stack: checked statically and at run time."""

import ast
import json
import subprocess
import sys
from pathlib import Path

from serving.lean import HEAVY

SERVING = Path(__file__).resolve().parents[2] / "serving"


def test_no_heavy_import_statement_in_serving():
    offenders = []
    for py in SERVING.rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{py.name}: {n}" for n in names if n.split(".")[0] in HEAVY]
    assert offenders == []


def test_engine_and_replay_load_no_training_module(bundle_dir, test_images):
    code = f"""
import json, sys
from serving.engine import AnomalyEngine
from serving.images import read_image, list_images
from serving.station.replay import replay
e = AnomalyEngine.load({str(bundle_dir)!r})
e.infer(read_image(list_images({str(test_images / 'good')!r})[0]))
replay({str(bundle_dir)!r}, {str(test_images)!r}, limit=2)
from serving.lean import HEAVY
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in HEAVY)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
