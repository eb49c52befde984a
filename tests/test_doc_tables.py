"""The tables in docs/ whose numbers live in the code are written from it (robench docs) and are current."""
from __future__ import annotations

from types import MappingProxyType

import benchmark.budgets as budgets
from robench.cli import main
from robench.doc_tables import DOCS, render, stale


def test_the_generated_tables_in_docs_are_current(capsys):
    assert stale() == [], "run: robench docs --write"
    assert main(["docs"]) == 0 and "are current" in capsys.readouterr().out


def test_a_changed_number_in_the_code_makes_the_docs_stale(monkeypatch):
    """What the check guards: the docs said eps 0.15 and 0.1 after the digits board moved to 0.2."""
    moved = dict(budgets.BOARDS)
    moved[("digits", "Linf")] = (0.25, "0.25")
    monkeypatch.setattr(budgets, "BOARDS", MappingProxyType(moved))
    text = render()[DOCS / "datasets.md"]
    assert "| digits Linf | 0.25 | calibrated (below) |" in text
    assert str(DOCS / "datasets.md") in stale()


def test_the_architecture_table_counts_parameters():
    text = render()[DOCS / "model_zoo.md"]
    assert "| `digits_cnn` | Two 3x3 conv blocks and a two-layer head | `width=32` | 151,306 |" in text
    assert "| `wrn_70_16` |" in text and "266,796,506" in text


def test_the_options_table_is_robench_evaluate_help():
    """docs/evaluation.md listed 13 options by hand and had missed four (--channels-last, --compile, --verify and
    --verify-time-limit) and the corruptions threat model; it is read off the parser now."""
    text = render()[DOCS / "evaluation.md"]
    assert "| `--channels-last` / `--no-channels-last` | run the model in the channels_last memory format" in text
    assert "| `--verify-time-limit S` | seconds of exact verification a point may take" in text
    assert "| `--version {standard,plus,rand,fast,auto}` | protocol version (default standard); " in text
    assert "| `--model MODEL` | a zoo id (robench models lists them) or package.module:function, " in text
    assert "(imported from the current folder and PYTHONPATH); required |" in text
    assert "| `--no-progress` | no progress display " in text and "-h" not in text.split("evaluate-options")[1]


def test_the_submit_table_lists_every_action_and_its_arguments():
    """docs/submitting.md showed two example lines per action and no option's meaning; it is read off the parser."""
    text = render()[DOCS / "submitting.md"].split("generated: submit-options")[1]
    for action in ("check", "evaluate", "verify-adversarial", "verify-external", "migrate", "schema"):
        assert f"| `{action}` | " in text
    assert "| `check` | `PATHS` | submission files (YAML or JSON) |" in text  # a positional: no "; required"
    assert "| `verify-adversarial` | `--model MODEL` | the zoo id of the model the examples attack; required |" in text
    assert "| `evaluate` | `--n-examples N` | attack only the first N test points" in text
    assert "| `evaluate` | `--no-progress` | no progress display |" in text and "`-h" not in text


def test_robench_docs_reports_stale_tables_and_rewrites_them(tmp_path, monkeypatch, capsys):
    import shutil

    import robench.doc_tables as doc_tables

    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    monkeypatch.setattr(doc_tables, "DOCS", docs)
    assert main(["docs"]) == 0
    assert capsys.readouterr().out == f"the generated tables ({', '.join(doc_tables.TABLES)}) are current\n"
    moved = dict(budgets.BOARDS)
    moved[("digits", "Linf")] = (0.25, "0.25")
    monkeypatch.setattr(budgets, "BOARDS", MappingProxyType(moved))
    evaluation = docs / "evaluation.md"  # and a table edited by hand
    evaluation.write_text(evaluation.read_text(encoding="utf-8").replace("| `--seed SEED` |", "| `--seed S` |"), encoding="utf-8")
    both = f"{docs / 'datasets.md'}, {evaluation}"
    assert main(["docs"]) == 1
    assert capsys.readouterr().out == f"generated tables out of date in {both}; run robench docs --write\n"
    assert main(["docs", "--write"]) == 0
    assert capsys.readouterr().out == f"rewrote {both}\n"
    assert "| `--seed SEED` |" in evaluation.read_text(encoding="utf-8")
    assert "| digits Linf | 0.25 |" in (docs / "datasets.md").read_text(encoding="utf-8")
    assert (DOCS / "datasets.md").read_text(encoding="utf-8") != (docs / "datasets.md").read_text(encoding="utf-8")
    assert main(["docs", "--write"]) == 0 and capsys.readouterr().out == "the generated tables were current\n"


def test_an_architecture_without_keyword_arguments_says_none(monkeypatch):
    from torch import nn

    from model_zoo import architectures

    def plain(num_classes: int = 10) -> nn.Module:
        """One linear layer on flattened 8x8 digits."""
        return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))

    monkeypatch.setattr(architectures, "ARCHITECTURES", MappingProxyType({**architectures.ARCHITECTURES, "plain_linear": plain}))
    assert "| `plain_linear` | One linear layer on flattened 8x8 digits | (none) | 650 |" in render()[DOCS / "model_zoo.md"]


def test_the_train_table_is_robench_train_help():
    text = render()[DOCS / "training.md"].split("generated: train-options")[1]
    assert "| `RECIPE` | a recipe name, or a submission file (.yaml/.json) to rebuild |" in text
    assert "| `--set KEY=VALUE` | override a setting, e.g. --set epochs=10 (the value is read as YAML) |" in text
    assert "| `--quiet` | no per-epoch progress |" in text and "`-h" not in text
