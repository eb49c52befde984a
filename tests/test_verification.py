"""Both sides of the truth through the record, the command line and the site: certified <= exact <= attacked,
points the attacks missed flagged and ranked by, models the bounds cannot take named, the journal resumed."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import benchmark.verification as verification  # noqa: E402
from benchmark.milp import ROBUST, model_classifier, verify_point  # noqa: E402
from benchmark.bounds import certify, input_box, to_network  # noqa: E402
from benchmark.record import PointResult  # noqa: E402
from benchmark.runner import evaluate  # noqa: E402
from benchmark.threat_models import get_threat_model  # noqa: E402
from benchmark.verification import attach, verify_record  # noqa: E402
from leaderboard.aggregate import aggregate  # noqa: E402
from leaderboard.site import build_site  # noqa: E402
from leaderboard.sources import read_record  # noqa: E402
from leaderboard.synthetic import make_card, make_record  # noqa: E402
from robench.cli import main as cli_main  # noqa: E402
from tests.runner_models import WEIGHTS_ENV, shared_weights  # noqa: E402
from test_milp import HiddenRegion  # noqa: E402


#: an L2 budget at which the runner tests' MLP has certified, exactly proved and attacked points among the 20
EPS_L2 = 0.35


@pytest.fixture(scope="module")
def mlp():
    """The runner tests' trained digits MLP (hidden 32) and 40 test points."""
    from benchmark.data import load_dataset
    from tests.runner_models import digits_mlp

    import os
    os.environ[WEIGHTS_ENV] = str(shared_weights())
    model = digits_mlp()
    x, y = load_dataset("digits", "test", n_examples=20)
    return model, x, y


@pytest.mark.parametrize("threat, eps, method", [("Linf", 0.12, "crown+milp"), ("L2", EPS_L2, "crown+bab")])
def test_certified_exact_and_attacked_bracket_the_truth_and_the_program_never_clears_an_attacked_point(mlp, threat, eps,
                                                                                                        method):
    model, x, y = mlp
    record = evaluate(model, "digits", threat, eps, x=x, y=y, analysis=False, progress=False, verify=True,
                      verify_time_limit=20)
    v = record.verification
    assert v.status == "verified" and v.method == method and len(v.statuses) == 20
    assert v.certified_accuracy <= v.lower <= record.robust_accuracy + 1e-12 and v.upper <= record.robust_accuracy + 1e-12
    assert v.undecided == 0 and v.exact_accuracy == pytest.approx(v.lower)
    counts = {s: v.statuses.count(s) for s in verification.POINT_STATUSES}
    assert counts["certified"] > 0 and counts["attacked"] > 0 and counts["exact_robust"] > 0
    assert v.exact_accuracy == pytest.approx((counts["certified"] + counts["exact_robust"]) / 20)
    # the program on the points an attack broke: never a proof of robustness
    net = to_network(model, (1, 8, 8))
    cert = certify(net, x, y, threat, eps)
    low, high = input_box(x, get_threat_model(threat), eps)
    for i in (i for i, s in enumerate(v.statuses) if s == "attacked"):
        result = verify_point(net, x[i], int(y[i]), [(lo[i], hi[i]) for lo, hi in cert.layer_bounds], low[i], high[i],
                              model_classifier(model, (1, 8, 8)), l2_eps=eps if threat == "L2" else None, time_limit=20)
        assert result.status != ROBUST
    assert read_record(record.save(Path(pytest.importorskip("tempfile").mkdtemp()) / "r.json")) == record


def _protocol_missed(x, y):
    """A record in which the protocol left the hidden-region point robust (as APGD does: test_milp)."""
    card = make_card("Hidden2020Region")
    record = make_record(card, 1.0, 1.0, n_examples=1)  # at the board's eps, 0.2
    record.points = [PointResult(0, int(y[0]), True, True)]
    return card, record


def test_points_the_attacks_missed_are_flagged_and_lower_the_best_known_accuracy(tmp_path):
    model = HiddenRegion().eval()
    x, y = torch.full((1, 1, 8, 8), 0.75), torch.zeros(1, dtype=torch.long)  # 0.95 per pixel is within 0.2
    card, record = _protocol_missed(x, y)
    attach(record, verify_record(model, record, x, y))
    v = record.verification
    assert v.statuses == ["exact_broken"] and v.missed == [0] and v.exact_accuracy == 0.0 and v.upper == 0.0
    assert "attacks_missed_points" in record.flags and len(v.counterexamples["0"]) == 64
    with torch.no_grad():
        assert model(torch.tensor(v.counterexamples["0"]).reshape(1, 1, 8, 8)).argmax(1).item() == 1
    aggregation = aggregate([card], [record])
    entry = aggregation.models[card.key]
    assert entry.best_known == 0.0 and "exact verification" in entry.best_known_source
    build_site(aggregation, tmp_path)
    page = (tmp_path / "models/digits/Linf/Hidden2020Region.html").read_text()
    assert "The attacks missed 1 point(s)" in page and "attacks_missed_points" in page
    assert "then a mixed-integer program per point (crown+milp)" in page  # the method in words


def test_a_certified_point_an_attack_broke_is_a_contradiction(mlp):
    model, x, y = mlp
    record = evaluate(model, "digits", "Linf", 0.01, x=x[:5], y=y[:5], analysis=False, progress=False)
    for p in record.points:  # pretend an attack broke them all
        p.robust = False
    with pytest.raises(verification.VerificationError, match="certified but an attack broke it"):
        verify_record(model, record, x[:5], y[:5])


def test_a_model_the_bounds_cannot_take_is_not_verifiable_with_its_reason(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Tanh()).eval()
    x, y = torch.rand(3, 1, 8, 8), torch.zeros(3, dtype=torch.long)
    record = evaluate(model, "digits", "Linf", 0.1, x=x, y=y, analysis=False, progress=False, verify=True)
    assert record.verification.status == "not_verifiable" and "Tanh" in record.verification.reason
    assert "not verifiable" in record.summary()
    card = make_card("Tanh2020Model")
    record.model["id"] = card.id
    record.eps = card.eps
    build_site(aggregate([card], [record]), tmp_path)
    assert "Not verifiable: " in (tmp_path / "models/digits/Linf/Tanh2020Model.html").read_text()


def test_an_interrupted_verification_resumes_from_its_journal(mlp, tmp_path, monkeypatch):
    model, x, y = mlp
    record = evaluate(model, "digits", "Linf", 0.12, x=x, y=y, analysis=False, progress=False)
    whole = verify_record(model, record, x, y)
    monkeypatch.setattr(verification, "BLOCK", 5)
    original, calls = verification._decide_block, []

    def dies_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(verification, "_decide_block", dies_on_the_third)
    journal = tmp_path / "v.journal"
    with pytest.raises(KeyboardInterrupt):
        verify_record(model, record, x, y, journal=journal)
    calls.clear()
    monkeypatch.setattr(verification, "_decide_block", lambda *a, **k: (calls.append(1), original(*a, **k))[1])
    resumed = verify_record(model, record, x, y, journal=journal)
    assert len(calls) == 2  # the two blocks the journal did not hold
    assert resumed.statuses == whole.statuses and resumed.counterexamples == whole.counterexamples
    assert not journal.exists()


def test_robench_verify_adds_the_verification_to_a_record(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(WEIGHTS_ENV, str(shared_weights()))
    args = ["--model", "tests.runner_models:digits_mlp", "--n-examples", "30", "--eps", "0.1", "--out", str(tmp_path)]
    assert cli_main(["verify", *args[:2], "--out", str(tmp_path)]) == 2
    assert "no record at" in capsys.readouterr().err
    assert cli_main(["evaluate", *args, "--no-progress"]) == 0
    record_file = tmp_path / "digits/Linf/digits_mlp.standard.json"
    assert cli_main(["verify", *args[:2], "--out", str(tmp_path), "--time-limit", "20"]) == 0
    out = capsys.readouterr().out
    assert "certified:" in out and "exact robust accuracy" in out
    record = read_record(tmp_path / "digits/Linf/digits_mlp.standard.json")
    assert record.verification.status == "verified" and len(record.verification.statuses) == 30
    data = json.loads(record_file.read_text(encoding="utf-8"))
    data["model"]["fingerprint"] = "0" * 16  # as if evaluated from other weights
    record_file.write_text(json.dumps(data), encoding="utf-8")
    assert cli_main(["verify", *args[:2], "--out", str(tmp_path)]) == 2
    assert f"robench verify: error: {record_file} was made from other weights than {args[1]}'s" in capsys.readouterr().err


def test_a_verification_whose_numbers_contradict_its_points_is_refused(tmp_path):
    from benchmark.record import RecordError

    model = HiddenRegion().eval()
    x, y = torch.full((1, 1, 8, 8), 0.75), torch.zeros(1, dtype=torch.long)
    _, record = _protocol_missed(x, y)
    attach(record, verify_record(model, record, x, y))
    data = record.to_dict()
    path = tmp_path / "r.json"
    for edit, message in (({"upper": 1.0}, "verification.upper"), ({"missed": []}, "verification.missed"),
                          ({"statuses": ["attacked"]}, "contradicts the attacks' result"),
                          ({"statuses": ["fine"]}, "unknown ['fine']")):
        path.write_text(json.dumps({**data, "verification": {**data["verification"], **edit}}))
        with pytest.raises(RecordError, match=message.replace("[", r"\[").replace("]", r"\]")):
            read_record(path)
    path.write_text(json.dumps(data))
    assert read_record(path).verification.missed == [0]


def test_torchrun_shares_the_points_and_writes_what_one_process_writes(tmp_path, monkeypatch):
    import os
    import shutil
    import subprocess

    monkeypatch.setenv(WEIGHTS_ENV, str(shared_weights()))
    args = ["--model", "tests.runner_models:digits_mlp"]
    assert cli_main(["evaluate", *args, "--n-examples", "60", "--eps", "0.1", "--out", str(tmp_path / "one"),
                     "--no-progress"]) == 0
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "robench.cli", "verify", *args, "--out", str(tmp_path / "two")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("record written to") == 1
    assert cli_main(["verify", *args, "--out", str(tmp_path / "one")]) == 0
    path = Path("digits", "Linf", "digits_mlp.standard.json")
    one, shared = (json.loads((tmp_path / d / path).read_text())["verification"] for d in ("one", "two"))
    for key in ("statuses", "missed", "counterexamples", "certified_accuracy", "exact_accuracy", "binaries"):
        assert one[key] == shared[key], key
    assert sorted(p.name for p in (tmp_path / "two" / path).parent.iterdir()) == [path.name]  # journals gone


def test_each_rank_decides_every_world_th_block_only(mlp, monkeypatch):
    model, x, y = mlp
    record = evaluate(model, "digits", "Linf", 0.05, x=x, y=y, analysis=False, progress=False)
    handed: dict = {}
    monkeypatch.setattr(verification, "BLOCK", 5)
    monkeypatch.setattr(verification.dist_utils, "rank_and_world", lambda: (1, 2))
    monkeypatch.setattr(verification.dist_utils, "gather_chunks", lambda results: handed.update(results) or results)
    assert verify_record(model, record, x, y) is None  # rank 1 writes nothing
    assert sorted(handed) == [5, 15]  # blocks 1 and 3 of the four
    handed.clear()
    assert verify_record(model, record, x, y, shard=False) is not None and handed == {}  # evaluate()'s own call


def test_a_randomised_model_is_not_verifiable(mlp):
    model, x, y = mlp
    record = evaluate(model, "digits", "Linf", 0.05, x=x[:3], y=y[:3], analysis=False, progress=False)
    record.flags.append("randomness")  # as the pre-attack check sets it
    details = verify_record(model, record, x[:3], y[:3])
    assert details.status == "not_verifiable" and "randomised" in details.reason


def test_points_out_of_time_are_undecided_and_widen_the_bracket(mlp):
    model, x, y = mlp
    record = evaluate(model, "digits", "L2", EPS_L2, x=x, y=y, analysis=False, progress=False)
    v = verify_record(model, record, x, y, time_limit=1e-6)  # no program can finish: every uncertified robust point
    undecided = [i for i, s in enumerate(v.statuses) if s == "undecided"]
    assert undecided and v.undecided == len(undecided) and v.exact_accuracy is None
    assert set(v.statuses) == {"clean", "certified", "attacked", "undecided"}
    assert v.reasons == {str(i): "time limit of 1e-06 s" for i in undecided}
    assert v.lower == v.certified_accuracy == v.statuses.count("certified") / 20
    assert v.upper == pytest.approx(v.lower + len(undecided) / 20) and v.upper == pytest.approx(record.robust_accuracy)


def test_only_records_with_an_lp_budget_are_verified(mlp):
    model, x, y = mlp
    record = evaluate(model, "digits", "Linf", 0.05, x=x[:3], y=y[:3], analysis=False, progress=False)
    record.eps = None  # as a corruptions record has
    with pytest.raises(ValueError, match="^only Linf and L2 records can be verified$"):
        verify_record(model, record, x[:3], y[:3])


def test_attach_flags_only_a_record_whose_points_the_attacks_missed():
    from benchmark.record import VerificationDetails

    card = make_card("Hidden2020Region")
    record = make_record(card, 1.0, 1.0, n_examples=1)
    flags, checks = list(record.flags), dict(record.check_details)
    attach(record, VerificationDetails(status="verified", missed=[]))
    assert record.flags == flags and record.check_details == checks and record.verification.missed == []
    attach(record, VerificationDetails(status="verified", missed=[0]))
    attach(record, VerificationDetails(status="verified", missed=[0]))  # a second verification: still one flag
    assert record.flags == [*flags, "attacks_missed_points"]
    assert record.check_details["attacks_missed_points"] == {"points_missed": 1, "indices": [0]}


def test_a_network_over_the_exact_limit_gets_ibp_certificates_only(mlp):
    """Above MAX_EXACT_RELUS (the zoo's CNNs) no program runs: IBP certifies what it can, the rest stays undecided."""
    model, x, y = mlp
    record = evaluate(model, "digits", "Linf", 0.05, x=x, y=y, analysis=False, progress=False)
    v = verify_record(model, record, x, y, max_exact_relus=1)
    assert v.method == "ibp" and v.num_relus > 1 and v.exact_accuracy is None
    net = to_network(model, (1, 8, 8))
    ibp = certify(net, x, y, "Linf", 0.05, method="ibp").certified.tolist()
    robust = [p.robust for p in record.points]
    assert v.statuses == ["clean" if not p.clean_correct else "certified" if ibp[i] else "attacked" if not robust[i]
                          else "undecided" for i, p in enumerate(record.points)]
    assert "undecided" in v.statuses and "certified" in v.statuses
    assert set(v.reasons.values()) == {"too many ReLUs for CROWN and exact verification here"}


def test_a_model_that_is_not_verifiable_is_told_at_once(mlp):
    _, x, y = mlp
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Tanh()).eval()
    record = evaluate(model, "digits", "Linf", 0.1, x=x[:3], y=y[:3], analysis=False, progress=False)
    details = verify_record(model, record, x[:3], y[:3])
    assert details.status == "not_verifiable" and 0 < details.time_s < 60  # measured, not left at 0
