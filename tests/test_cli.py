"""`asiarch baselines` end to end on a real local Ray (trains seeds, writes the table and the plot); bad input to `run`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ASIARCH = str(Path(sys.executable).parent / "asiarch")
SMALL = [
    "scale.train.steps=4", "scale.train.report_every=2", "scale.train.eval_batches=1",
    "scale.corpus.max_documents=80", "scale.corpus.tokenizer_vocab_size=512",
    "scale.model.num_layers=1", "scale.train.batch_size=8", "scale.train.mqar_batch_size=8",
    "scale.mqar.num_train=500", "scale.mqar.num_test=100",
    "scale.downstream.tasks=[piqa,lambada]", "scale.downstream.limit=4",
]


def cli_env(tmp_path) -> dict[str, str]:
    """The CLI's environment in these tests: no API key (offline), a cache and a Ray of their own."""
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    return {**env, "ASIARCH_CACHE": str(tmp_path / "cache"), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def run_cli(args, tmp_path, timeout=300):
    return subprocess.run([ASIARCH, *args], cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True,
                          timeout=timeout)


def test_baselines_trains_the_seeds_and_writes_results(tmp_path):
    proc = run_cli(["baselines", *SMALL, "seeds=[deltanet,attention]", "run.downstream=true"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Seed baselines at cpu_tiny" in proc.stdout
    (out_dir,) = (tmp_path / "runs").glob("seeds-cpu_tiny-*")
    rows = json.loads((out_dir / "results.json").read_text())
    assert [r["seed"] for r in rows] == ["deltanet", "attention"]
    for row in rows:
        assert row["stop_reason"] == "completed" and row["steps"] == 4
        assert [h["step"] for h in row["history"]] == [2, 4]
        assert set(row["downstream"]) == {"piqa", "lambada", "mean"}
        assert 0.0 <= row["mqar_accuracy"] <= 1.0
    table = (out_dir / "results.md").read_text()
    assert "| deltanet |" in table and "| attention |" in table
    assert (out_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_baselines_explore_stage_fills_the_entries_a_campaign_looks_up(tmp_path):
    """`--stage explore` trains campaign.seed on every explore.anchor_seeds, cached under the keys explore reads."""
    from asiarch.baselines import BaselineCache
    from asiarch.campaign.scoring import scores_downstream
    from asiarch.config import ScaleConfig, compose, explore_scale, seeded_scale
    from asiarch.train import lr_at

    overrides = [*SMALL, "scale.stages.explore_steps=4", "scale.stages.reports_per_trial=2", "explore.anchor_seeds=[0,1]"]
    proc = run_cli(["baselines", "--stage", "explore", *overrides], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (out_dir,) = (tmp_path / "runs").glob("seeds-cpu_tiny-*")
    assert [r["seed"] for r in json.loads((out_dir / "results.json").read_text())] == ["deltanet:s0", "deltanet:s1"]
    base = explore_scale(ScaleConfig.from_dict(compose(overrides).scale))
    assert base.train.steps == 4 and base.train.schedule_steps == 768  # the head of cpu_tiny's verify run
    cache = BaselineCache(tmp_path / "runs" / "baselines")
    for seed in (0, 1):  # what ExploreStage._start_anchor computes for each anchor run
        scale = seeded_scale(base, seed)
        entry = cache.get("deltanet", scale, scores_downstream(scale, "explore"))
        assert entry is not None and entry["steps"] == 4 and entry["stop_reason"] == "completed"
        # it trained under the verify schedule (still warming up at step 4), not a 4-step schedule of its own
        assert entry["history"][-1]["lr"] == pytest.approx(lr_at(3, base.train))
        assert lr_at(3, base.train) < 0.5 * base.train.lr
    # MQAR's test set was drawn with the directory's secret (owner-only: a training sandbox cannot read it), the one
    # a campaign there draws with; the entries are keyed by it, so another secret finds none of them
    secret = cache.root / "mqar-test-secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and int(secret.read_text()) == cache.mqar_secret()
    secret.write_text(str(cache.mqar_secret() + 1))
    assert BaselineCache(cache.root).get("deltanet", seeded_scale(base, 0), scores_downstream(base, "explore")) is None
    secret.write_text("not a number")
    with pytest.raises(ValueError, match="does not hold MQAR's test secret"):
        BaselineCache(cache.root).mqar_secret()


BAD_INPUT = [
    (["run", "seeds=[not_a_seed]"], "unknown seed(s) ['not_a_seed']"),
    (["run", "scale=no_such_scale"], "no_such_scale"),
    (["run", "scale.train.shedule=cosine"], "shedule"),
    (["run", "llm=anthropic"], "ANTHROPIC_API_KEY"),
    (["run", "verify.search=grid"], "verify.search must be one of pbt, sweep, fixed"),
    (["run", "campaign.max_candidatez=3"], "max_candidatez"),
    (["status"], "no campaign found"),
    (["baselines", "seeds=[not_a_seed]"], "unknown seed(s) ['not_a_seed']"),
    # no schema in YAML or overrides: a string here ran a campaign whose anchor and candidates all failed
    (["run", "scale.train.lr=abc"], "invalid config section 'scale.train': lr must be a number, got 'abc'"),
    (["config", "campaign.max_candidates=x"], "max_candidates must be an integer, got 'x'"),
]


@pytest.mark.parametrize("args,message", BAD_INPUT)
def test_bad_input_exits_with_a_clear_message(tmp_path, monkeypatch, capsys, args, message):
    """In process (one interpreter for all cases); the installed script is exercised below."""
    from asiarch.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("ASIARCH_CACHE", str(tmp_path / "cache"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_the_installed_script_reports_bad_input_with_exit_code_2(tmp_path):
    args, message = BAD_INPUT[0]
    proc = run_cli(args, tmp_path, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ctrl_c_during_run_keeps_the_campaign_and_says_how_to_resume(tmp_path):
    """A real SIGINT once the campaign has started (Ray, the memory writer) and is preparing its data; during
    trials Tune handles Ctrl-C itself (it stops the trials, and explore ends interrupted with the same hint)."""
    import signal

    proc = subprocess.Popen([ASIARCH, "run", "llm=offline", "campaign.max_candidates=1", *SMALL], cwd=tmp_path,
                            env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # the campaign's first line, printed once Ray and the memory writer are up
            if line.startswith("campaign "):
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)  # a bound against a hang
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "asiarch run: interrupted; what was trained and scored is kept. Run the same command again" in err
    assert "Traceback" not in err
    (state,) = (tmp_path / "runs").glob("campaign-*/campaign.json")
    assert json.loads(state.read_text())["status"] == "interrupted"


def test_tables_are_not_clipped_when_the_output_is_a_log():
    """Piped output (CI, `ray job logs`, `| tee`) gets a fixed wide console; rich would clip it to 80 columns."""
    from asiarch.console import LOG_WIDTH, output_console
    from asiarch.train.tables import results_table

    proc = subprocess.run([sys.executable, "-c", "from asiarch.console import output_console; "
                           "print(output_console().width)"], capture_output=True, text=True, timeout=60)
    assert int(proc.stdout.strip()) == LOG_WIDTH
    console = output_console()
    with console.capture() as captured:
        console.print(results_table([{"seed": "a" * 60, "eval_loss": 1.0, "mqar_accuracy": 0.5,
                                      "tokens_per_second": 1e5, "parameters": 10**6}], title="t"))
    assert "a" * 60 in captured.get() and "…" not in captured.get()
