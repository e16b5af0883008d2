"""``asiarch export``'s standalone module carries asiarch's Triton kernels and still runs on a bare CPU."""

from __future__ import annotations

import ast
import collections
import os
import subprocess
import sys
from dataclasses import replace

from asiarch.campaign.export import export_candidate
from asiarch.memory.schema import Candidate
from asiarch.proposer.genome import seed_genome
from asiarch.proposer.render import render

LOAD = (
    "import importlib.util, sys, torch\n"
    "sys.modules['asiarch'] = None  # importing asiarch would fail\n"
    "{block}"
    "spec = importlib.util.spec_from_file_location('exported', {path!r})\n"
    "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
)
# A machine with torch only: no triton, no fla. The design runs on the PyTorch paths.
BARE_CPU = LOAD + (
    "assert m.triton is None\n"
    "mixer = m.MIXER(hidden_size=m.CONFIG['model']['hidden_size'], num_heads=m.CONFIG['model']['num_heads'])\n"
    "x = torch.randn(2, 37, m.CONFIG['model']['hidden_size'], requires_grad=True)\n"
    "y = mixer(x); y.square().mean().backward()\n"
    "assert y.shape == x.shape and torch.isfinite(x.grad).all() and mixer.local_log_temp.grad is not None\n"
    "try:\n    m.sliding_window_attention_triton(x, x, x, 4)\nexcept RuntimeError as e:\n    print('stand-in:', e)\n"
)
# The exported kernels themselves, on the CPU in Triton's interpreter, against the exported PyTorch paths.
INTERPRETED = LOAD + (
    "torch.manual_seed(0)\n"
    "q, k, v = (torch.randn(1, 37, 2, 16, requires_grad=True) for _ in range(3)); g = -torch.rand(1, 37, 2)\n"
    "o = m.sliding_window_attention_triton(q, k, v, 8, block_size=16); ro = m.sliding_window_torch(q, k, v, 8)\n"
    "(dq,) = torch.autograd.grad(o.sum(), q); (rdq,) = torch.autograd.grad(ro.sum(), q)\n"
    "s, _ = m.ssd_triton(q, k, v, g, chunk_size=16); rs, _ = m.ssd_chunk_torch(q, k, v, g, chunk_size=16)\n"
    "(dk,) = torch.autograd.grad(s.sum(), k); (rdk,) = torch.autograd.grad(rs.sum(), k)\n"
    "print(max(float((a - b).abs().max()) for a, b in ((o, ro), (dq, rdq), (s, rs), (dk, rdk))))\n"
)


def _windowed_export(tmp_path):
    genome = replace(seed_genome("mamba2"), window=16)  # SSD plus a sliding-window branch: both kernels' operators
    code = render(genome, "WindowedSSD")
    candidate = Candidate(id="c0ffee", campaign="t", name="windowed-ssd", code=code, motivation="A test design.")
    text = export_candidate(candidate, {"model": {"hidden_size": 64, "num_heads": 2}})
    path = tmp_path / "windowed.py"
    path.write_text(text)
    return text, path


def _defined_twice(tree: ast.Module) -> list[str]:
    """Functions or classes the copied modules define more than once (a later copy would shadow)."""
    names: collections.Counter[str] = collections.Counter()

    def walk(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names[node.name] += 1
            elif isinstance(node, ast.If):
                walk(node.body)  # the kernels (its else branch holds the stand-ins)

    walk(tree.body)
    return sorted(n for n, count in names.items() if count > 1)


def test_exported_window_design_has_the_kernels_and_runs_on_a_bare_cpu(tmp_path):
    text, path = _windowed_export(tmp_path)
    tree = ast.parse(text)
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not [n for n in imports if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("asiarch")]
    assert not [a.name for n in imports if isinstance(n, ast.Import) for a in n.names if a.name.startswith("asiarch")]
    assert not _defined_twice(tree)
    for needle in ("@triton.jit", "def ssd_triton(", "def sliding_window_attention_triton(",
                   "return sliding_window_attention_triton(q, k, v, window, scale)",
                   "return ssd_triton(q, k, v, g, scale, initial_state, output_final_state, chunk_size)",
                   "sliding_window_attention(q * temperature, k, v, self.window"):
        assert needle in text, needle

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    bare = subprocess.Popen(
        [sys.executable, "-c", BARE_CPU.format(path=str(path), block="sys.modules['triton'] = sys.modules['fla'] = None\n")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    interpreted = subprocess.Popen(
        [sys.executable, "-c", INTERPRETED.format(path=str(path), block="")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**env, "TRITON_INTERPRET": "1"})
    out, err = bare.communicate(timeout=120)
    assert bare.returncode == 0, err
    assert "stand-in: sliding_window_attention_triton needs triton" in out
    out, err = interpreted.communicate(timeout=120)
    assert interpreted.returncode == 0, err
    assert float(out.split()[-1]) < 1e-4, out


FRONTIER_RUN = (
    "import importlib.util, sys, torch\n"
    "sys.modules['asiarch'] = None  # importing asiarch would fail\n"
    "for path in sys.argv[1:]:\n"
    "    spec = importlib.util.spec_from_file_location(path, path)\n"
    "    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
    "    mixer = m.MIXER(hidden_size=64, num_heads=2)\n"
    "    x = torch.randn(2, 21, 64, requires_grad=True)\n"
    "    y = mixer(x); y.square().mean().backward()\n"
    "    assert y.shape == x.shape and torch.isfinite(x.grad).all()\n"
    "    print('ran', type(mixer).__name__)\n"
)


def test_exported_frontier_designs_run_without_asiarch(tmp_path):
    """Designs on the frontier operators (KDA, GDN-2 gates, RWKV-7's DPLR, Householder products) export whole."""
    from pathlib import Path

    import asiarch.arch.ops as ops
    from asiarch.campaign.export import OPS_ORDER

    assert {p.stem for p in Path(ops.__file__).parent.glob("*.py")} - {"__init__"} == set(OPS_ORDER)
    paths = []
    for name in ("kda", "gdn2", "rwkv7", "gated_deltaproduct"):
        code = render(seed_genome(name), f"Frontier{name.title().replace('_', '')}")
        candidate = Candidate(id=name, campaign="t", name=name, code=code, motivation="A test design.")
        paths.append(tmp_path / f"{name}.py")
        paths[-1].write_text(export_candidate(candidate, {"model": {"hidden_size": 64, "num_heads": 2}}))
    proc = subprocess.run([sys.executable, "-c", FRONTIER_RUN, *map(str, paths)], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("ran Frontier") == 4, proc.stdout
