"""Issue 5: submissions end to end, verify-adversarial and external evaluations."""
from __future__ import annotations

import gc
import hashlib
import logging
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch import nn

from benchmark.budgets import BOARDS, default_eps
from robench.cli import main
from benchmark.data import load_dataset
from benchmark.external import read_external, verify_adversarial
from model_zoo.architectures.digits import DigitsMLP
from model_zoo.submit_cli import check_files


def _tiny_digits_submission(root: Path, model_id: str = "Tiny2026Test", claimed: float | None = None) -> Path:
    torch.manual_seed(0)
    net = DigitsMLP(hidden=16)
    x, y = load_dataset("digits", "train")
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    xt, yt = load_dataset("digits", "test")
    with torch.no_grad():
        acc = (net(xt).argmax(1) == yt).float().mean().item()
    folder = root / "submissions" / "digits" / "Linf"
    folder.mkdir(parents=True)
    ckpt = folder / f"{model_id}.safetensors"
    save_file(net.state_dict(), str(ckpt))
    card = {
        "id": model_id, "dataset": "digits", "threat_model": "Linf", "eps": default_eps("digits", "Linf"),
        "paper": {"title": "A Tiny Test Model", "link": "https://example.org/tiny", "authors": ["Ada Tiny"],
                  "venue": "Tests", "year": 2026},
        "architecture": {"source": "robench", "name": "digits_mlp", "kwargs": {"hidden": 16}},
        "num_classes": 10, "preprocessing": {"mean": [0.0], "std": [1.0], "input_size": [1, 8, 8]},
        "checkpoint": {"path": f"submissions/digits/Linf/{model_id}.safetensors",
                       "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(), "format": "safetensors"},
        "training": {"description": "60 full-batch Adam steps"},
        "additional_data": False, "number_forward_passes": 1, "license": "MIT",
        "reported": {"clean_accuracy": acc if claimed is None else claimed, "robust_accuracy": None},
    }
    path = folder / f"{model_id}.yaml"
    path.write_text(yaml.safe_dump(card), encoding="utf-8")
    return path


def test_new_submission_goes_through_check_evaluate_and_onto_the_board(tmp_path, capsys, monkeypatch):
    path = _tiny_digits_submission(tmp_path)
    cards, problems = check_files([str(path)])
    assert problems == [] and [c.id for c in cards] == ["Tiny2026Test"]
    assert main(["submit", "check", str(path)]) == 0
    assert "OK submissions/digits/Linf/Tiny2026Test.yaml: Tiny2026Test on digits/Linf eps=0.2, robench:digits_mlp, " \
        in capsys.readouterr().out
    results, site = tmp_path / "results", tmp_path / "site"
    log = tmp_path / "evaluate.log"
    monkeypatch.chdir(tmp_path)  # the record goes to ./results unless --out says otherwise
    assert main(["submit", "evaluate", str(path), "--n-examples", "6", "--log", str(log), "--no-progress"]) == 0
    record = Path("results") / "digits" / "Linf" / "Tiny2026Test.standard.json"
    assert (results / record.relative_to("results")).is_file()
    out = capsys.readouterr().out
    assert "reproduced" in out and "robust accuracy" in out
    assert f"record written to {record} " in out  # the user did not know where it went
    assert "clean accuracy on the full test split" in log.read_text()
    assert main(["leaderboard", "build", "--results", str(results), "--submissions",
                 str(tmp_path / "submissions"), "--out", str(site)]) == 0
    summary = capsys.readouterr().out.splitlines()[-1]
    pages = len(list(site.rglob("*.html")))
    assert summary == f"{len(BOARDS)} boards, 1 ranked models, {pages} pages; open {site / 'index.html'}", summary  # every board, even empty
    board_pages = [p for p in site.rglob("*.html") if "Tiny2026Test" in p.read_text(encoding="utf-8")]
    assert any("digits" in p.name.lower() and "linf" in p.name.lower() for p in board_pages), board_pages


def test_claimed_clean_accuracy_mismatch_is_reported(tmp_path, capsys):
    path = _tiny_digits_submission(tmp_path, claimed=0.10)
    code = main(["submit", "evaluate", str(path), "--n-examples", "2", "--out", str(tmp_path / "r"), "--no-progress"])
    assert code == 1
    out = capsys.readouterr().out
    assert "claimed 10.00% -- MISMATCH (more than 0.5 points apart)\n" in out
    from leaderboard.sources import read_record

    model = read_record(tmp_path / "r" / "digits" / "Linf" / "Tiny2026Test.standard.json").model
    card = yaml.safe_load(path.read_text())
    assert model["checkpoint_sha256"] == card["checkpoint"]["sha256"] and model["name"] == "A Tiny Test Model"
    assert model["clean_accuracy_claimed"] == 0.10 and model["clean_accuracy_mismatch"] is True


def test_check_lists_every_problem_and_fails(tmp_path, capsys):
    path = _tiny_digits_submission(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["eps"] = 0.5
    data["license"] = None
    data["checkpoint"]["sha256"] = "abc"
    path.write_text(yaml.safe_dump(data))
    assert main(["submit", "check", str(path)]) == 1
    err = capsys.readouterr().err
    for field in ("eps", "license", "checkpoint.sha256"):
        assert f"{path}: {field}: " in err, err
    assert err.endswith("\n3 problem(s) in 1 file(s)\n")
    other = _tiny_digits_submission(tmp_path / "other", model_id="Other2026Test")
    other.write_text(other.read_text().replace("license: MIT", "license: ''"))
    assert main(["submit", "check", str(path), str(other)]) == 1  # every file's problems, not the last file's
    both = capsys.readouterr().err
    assert both.startswith(err.removesuffix("3 problem(s) in 1 file(s)\n")) and f"{other}: license: " in both
    assert both.endswith("\n4 problem(s) in 2 file(s)\n")
    assert main(["submit", "evaluate", str(path), "--out", str(tmp_path / "r"), "--no-progress"]) == 1
    assert capsys.readouterr().err == err.removesuffix("3 problem(s) in 1 file(s)\n")  # every problem, nothing run
    assert not (tmp_path / "r").exists()


class _Linear(nn.Module):
    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(w), nn.Parameter(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T + self.b


def _two_class_problem(n: int = 40):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(2, 16, generator=g) * 0.5
    model = _Linear(w, torch.zeros(2))
    x = 0.4 + 0.2 * torch.rand(n, 1, 4, 4, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def _exact_linf_adversarial(model: _Linear, x: torch.Tensor, y: torch.Tensor, scale: float):
    """The minimal Linf adversarial perturbation of a two-class linear model, times ``scale``."""
    with torch.no_grad():
        z = model(x)
        margin = (z.gather(1, y[:, None]) - z.gather(1, (1 - y)[:, None])).squeeze(1)
        direction = (model.w[1 - y] - model.w[y])  # increases z_other - z_y
        min_norm = margin / direction.abs().sum(1)
        delta = (scale * min_norm)[:, None] * direction.sign()
    return (x + delta.view_as(x)), min_norm


def test_verify_adversarial_counts_a_known_answer():
    model, x, y = _two_class_problem()
    x_adv, min_norm = _exact_linf_adversarial(model, x, y, scale=1.01)
    eps = float(min_norm.median())
    inside = 1.01 * min_norm <= eps
    report = verify_adversarial(model, x, y, x_adv[inside], torch.nonzero(inside).flatten(), "Linf", eps)
    assert report.ok and report.clean_accuracy == 1.0
    assert sorted(report.broken) == torch.nonzero(inside).flatten().tolist()
    assert report.proven_robust_accuracy == pytest.approx(1 - inside.float().mean().item())


def test_verify_adversarial_takes_float64_examples_and_names_wrong_shapes(tmp_path):
    from benchmark.external import load_adversarial_file

    model, x, y = _two_class_problem()
    x_adv, min_norm = _exact_linf_adversarial(model, x, y, scale=1.01)
    eps = float(min_norm.max()) * 1.01
    report = verify_adversarial(model, x, y, x_adv.double(), torch.arange(len(x)), "Linf", eps)  # saved as float64
    assert report.ok and sorted(report.broken) == list(range(len(x))) and report.proven_robust_accuracy == 0.0
    with pytest.raises(ValueError, match=r"^x_adv must have shape \(k, 1, 4, 4\) and indices shape \(k,\); "
                                         r"got \(3, 16\) and \(3,\)$"):
        verify_adversarial(model, x, y, x_adv[:3].flatten(1), torch.arange(3), "Linf", eps)
    path = tmp_path / "adv.safetensors"
    save_file({"x_adv": x_adv.contiguous()}, str(path))
    with pytest.raises(ValueError, match=r"adv.safetensors: missing tensor\(s\) indices \(expected x_adv and indices\)$"):
        load_adversarial_file(path)


def test_verify_adversarial_refuses_out_of_budget_out_of_range_and_non_adversarial():
    model, x, y = _two_class_problem()
    x_adv, min_norm = _exact_linf_adversarial(model, x, y, scale=1.01)
    eps = 0.05
    bad = x_adv.clone()
    bad[0] = x[0].clone()
    bad[0].view(-1)[0] -= 0.3          # outside the budget, inside [0, 1]
    bad[1] = x[1].clone()
    bad[1].view(-1)[0] = 1.5           # outside [0, 1]
    bad[2] = x[2]                      # not adversarial
    report = verify_adversarial(model, x, y, bad[:3], torch.arange(3), "Linf", eps)
    reasons = dict(report.rejected)
    assert "exceeds eps" in reasons[0] and "outside [0, 1]" in reasons[1] and "not adversarial" in reasons[2]
    assert report.broken == [] and report.proven_robust_accuracy == 1.0
    with pytest.raises(ValueError, match="must not repeat"):
        verify_adversarial(model, x, y, x_adv[:2], torch.tensor([4, 4]), "Linf", eps)


def test_external_evaluation_file_is_validated(tmp_path):
    good = tmp_path / "Madry2018Towards__Doe.yaml"
    good.write_text(yaml.safe_dump({
        "model_id": "Madry2018Towards", "dataset": "digits", "threat_model": "Linf", "eps": "1/10",
        "who": "Jane Doe", "attack": "APGD-DLR, 100 restarts", "robust_accuracy": 0.5, "link": "https://example.org/r",
    }))
    ext = read_external(good)
    assert ext.eps == pytest.approx(0.1) and ext.robust_accuracy == 0.5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model_id": "X", "robust_accuracy": 1.5, "link": "http://x", "colour": 1}))
    with pytest.raises(ValueError) as err:
        read_external(bad)
    assert str(err.value) == (
        f"{bad}: dataset: required, a non-empty str; threat_model: required, a non-empty str; who: required, a non-empty "
        "str; attack: required, a non-empty str; eps: required, a positive number or a fraction like '8/255'; "
        "robust_accuracy: required, a fraction in [0, 1]; link: must be an https:// URL; colour: unknown field")
    for acc in ("0.5", True, None):
        bad.write_text(good.read_text().replace("robust_accuracy: 0.5", f"robust_accuracy: {yaml.safe_dump(acc).split()[0]}"))
        with pytest.raises(ValueError, match=r": robust_accuracy: required, a fraction in \[0, 1\]$"):
            read_external(bad)


@pytest.mark.parametrize("examples, message", [
    ("../../../../tmp/x.safetensors", "must stay inside the folder"),
    ("/tmp/x.safetensors", "must stay inside the folder"),
    ("sub\\\\x.safetensors", "expected a file name relative to this file"),
    (5, "expected a file name relative to this file"),
])
def test_external_examples_stay_beside_their_file(tmp_path, examples, message):
    """A claim's adversarial examples were opened wherever the file said (../../.. or an absolute path)."""
    path = tmp_path / "Madry2018Towards__Doe.yaml"
    path.write_text(yaml.safe_dump({
        "model_id": "Madry2018Towards", "dataset": "digits", "threat_model": "Linf", "eps": 0.2, "who": "Jane Doe",
        "attack": "APGD", "robust_accuracy": 0.5, "link": "https://example.org/r", "adversarial_examples": examples,
    }))
    with pytest.raises(ValueError, match=rf"adversarial_examples: .*{message}"):
        read_external(path)
    (tmp_path / "inside").mkdir()
    path.write_text(path.read_text().replace(yaml.safe_dump({"adversarial_examples": examples}).strip(),
                                             "adversarial_examples: inside/x.safetensors"))
    assert read_external(path).adversarial_examples == "inside/x.safetensors"


def test_a_corruptions_submission_is_checked_and_evaluated_on_the_corrupted_sets(tmp_path, capsys):
    """The shipped Rusak2020Simple card, as a contributor's pull request would hold it: no eps, digits-C."""
    repo = Path(__file__).resolve().parents[1]
    path = repo / "submissions/digits/corruptions/Rusak2020Simple.yaml"
    assert main(["submit", "check", str(path)]) == 0
    checked = capsys.readouterr().out
    assert "Rusak2020Simple on digits/corruptions, robench:digits_cnn" in checked and "eps=" not in checked
    assert main(["submit", "evaluate", str(path), "--n-examples", "40", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "reproduced" in out and "mean corruption accuracy" in out
    from leaderboard.sources import read_record

    record = read_record(tmp_path / "digits" / "corruptions" / "Rusak2020Simple.standard.json")
    assert record.n_examples == 40 and len(record.corruptions.accuracy) == 15 and record.eps is None


def _fgsm_examples(folder: Path, n: int = 30) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """FGSM examples at the board's eps on those of the first ``n`` digits test points that they break on
    LeCun1998Gradient (undefended), the last one pushed out of [0, 1]; saved as a contributor would."""
    from benchmark.attacks import FGSM
    from model_zoo import load_model

    model = load_model("LeCun1998Gradient", dataset="digits", threat_model="Linf")
    x, y = load_dataset("digits", "test", n_examples=n)
    x_adv = FGSM("Linf")(model, x, y, default_eps("digits", "Linf")).x_adv.detach()
    with torch.no_grad():
        fooled = torch.nonzero((model(x_adv).argmax(1) != y) & (model(x).argmax(1) == y)).flatten()
    x_adv, indices = x_adv[fooled].clone(), fooled
    x_adv[-1] = x_adv[-1] + 2.0
    path = folder / "LeCun1998Gradient__Doe.safetensors"
    save_file({"x_adv": x_adv.contiguous(), "indices": indices}, str(path))
    return path, x_adv, indices


def test_robench_submit_verify_adversarial_prints_what_the_examples_prove(tmp_path, capsys):
    from model_zoo import load_model

    path, x_adv, indices = _fgsm_examples(tmp_path)
    x, y = load_dataset("digits", "test")
    model = load_model("LeCun1998Gradient", dataset="digits", threat_model="Linf")
    expected = verify_adversarial(model, x, y, x_adv, indices, "Linf", default_eps("digits", "Linf"))
    k = len(x_adv)
    assert k > 10 and len(expected.broken) == k - 1 and len(expected.rejected) == 1
    args = ["submit", "verify-adversarial", "--model", "LeCun1998Gradient", "--dataset", "digits",
            "--threat-model", "Linf", "--examples", str(path)]
    assert main(args) == 1  # one example was rejected
    out = capsys.readouterr().out
    assert f"  rejected example for test point {int(indices[-1])}: {expected.rejected[0][1]}\n" in out
    assert f"{k} examples: {k - 1} valid and breaking a correctly classified point, 1 rejected\n" in out
    assert (f"robust accuracy proven by the valid examples: {100 * expected.proven_robust_accuracy:.2f}% "
            "(an upper bound)") in out
    defaults = ["submit", "verify-adversarial", "--model", "LeCun1998Gradient", "--examples", str(path)]  # digits, Linf
    assert main([*defaults, "--eps", "0.01"]) == 1  # a smaller budget than the examples used: every one is out of it
    assert f"{k} examples: 0 valid and breaking a correctly classified point, {k} rejected" in capsys.readouterr().out


def test_robench_submit_verify_external_checks_the_examples_beside_the_file(tmp_path, capsys):
    examples, x_adv, indices = _fgsm_examples(tmp_path)
    claim = {"model_id": "LeCun1998Gradient", "dataset": "digits", "threat_model": "Linf", "eps": 0.2, "who": "Jane Doe",
             "attack": "FGSM", "robust_accuracy": 0.1, "link": "https://example.org/r"}
    path = tmp_path / "LeCun1998Gradient__Doe.yaml"
    path.write_text(yaml.safe_dump(claim))
    assert main(["submit", "verify-external", str(path)]) == 0
    out = capsys.readouterr().out
    assert "LeCun1998Gradient (digits/Linf): Jane Doe reports 10.00% with FGSM" in out
    assert "no adversarial examples given: the claim cannot be checked" in out
    path.write_text(yaml.safe_dump({**claim, "adversarial_examples": examples.name}))
    assert main(["submit", "verify-external", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"rejected example for test point {int(indices[-1])}: " in out
    assert f"{len(x_adv)} examples: {len(x_adv) - 1} valid and breaking a correctly classified point, 1 rejected" in out
    save_file({"x_adv": x_adv[:-1].contiguous(), "indices": indices[:-1]}, str(examples))  # without the bad one
    assert main(["submit", "verify-external", str(path)]) == 0
    assert f"{len(x_adv) - 1} examples: {len(x_adv) - 1} valid and breaking a correctly classified point, 0 rejected" \
        in capsys.readouterr().out
    path.write_text(yaml.safe_dump({**claim, "robust_accuracy": 2}))
    assert main(["submit", "verify-external", str(path)]) == 1
    assert "robust_accuracy: required, a fraction in [0, 1]" in capsys.readouterr().err


def test_an_evaluation_that_fails_is_logged_with_its_reason(tmp_path, capsys):
    path = _tiny_digits_submission(tmp_path)
    log = tmp_path / "evaluate.log"
    assert main(["submit", "evaluate", str(path), "--n-examples", "0", "--out", str(tmp_path / "r"),
                 "--log", str(log), "--no-progress"]) == 2
    reason = "n_examples must be a positive integer, got 0"
    assert f"robench submit evaluate: error: {reason}" in capsys.readouterr().err
    assert f"evaluation failed: {reason}" in log.read_text()


def test_a_log_file_is_closed_and_the_root_logger_restored_after_the_command(tmp_path, capsys):
    path = _tiny_digits_submission(tmp_path)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    log = tmp_path / "evaluate.log"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["submit", "evaluate", str(path), "--n-examples", "0", "--out", str(tmp_path / "r"),
                     "--log", str(log), "--no-progress"]) == 2
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]  # the file closed, not left to the GC
    assert "evaluation failed" in log.read_text()
    assert root.handlers == handlers and root.level == level  # no handler left writing into an old file
    logging.getLogger("robench.submit").error("after the command")
    assert "after the command" not in log.read_text()
