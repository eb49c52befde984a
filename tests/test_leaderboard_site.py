"""The static site as HTML: pages, links, escaping, plots, citations (no browser; see test_site_browser.py)."""
from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from benchmark.checks import FLAG_EXPLANATIONS
from leaderboard.aggregate import aggregate
from leaderboard.plots import curve_svg, nice_ticks
from leaderboard.site import bibtex_entry, build_site, flag_evidence, http_url, reproduce_command
from leaderboard.synthetic import make_card, make_record, synthetic_board

XSS_TITLE = "<script>alert(1)</script>"


class _Tags(HTMLParser):
    """Every start tag with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags_of(path: Path) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.tags


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    good = make_card("Madry2018Towards", title="Towards Deep Learning Models Resistant to Adversarial Attacks",
                     link="https://arxiv.org/abs/1706.06083", authors=("Aleksander Madry", "Aleksandar Makelov"),
                     venue="ICLR", year=2018)
    evil = make_card("Evil2020Script", "digits", "L2", title=XSS_TITLE, link="javascript:alert(1)",
                     footnote='<img src=x onerror="alert(2)">', authors=("<b>Mallory</b>",))
    flagged = make_card("Flag2021Masking", bibtex="@article{flag2021, title={Own entry}}")
    records = [make_record(good, 0.97, 0.8), make_record(evil, 0.9, 0.4),
               make_record(flagged, 0.95, 0.9, flags=["black_box_beats_white_box", "randomness"])]
    agg = aggregate([good, evil, flagged], records,
                    [{"dataset": "digits", "threat_model": "L2", "model_id": "Evil2020Script", "robust_accuracy": 0.3,
                      "attack": "<i>x</i>", "who": "someone", "link": "javascript:alert(3)"}])
    out = tmp_path_factory.mktemp("site")
    report = build_site(agg, out, problems=["results/bad.json: not valid JSON"])
    return out, report, agg


def test_pages_csvs_and_plots_are_written(site):
    out, report, agg = site
    for page in ("index.html", "protocol.html", "boards/digits_Linf.html", "boards/cifar10_Linf.html",
                 "models/digits/Linf/Madry2018Towards.html", "models/digits/L2/Evil2020Script.html",
                 "data/digits_Linf.csv", "data/all_results.csv", "static/site.css", "static/board.js",
                 "static/board-grid.css", "models/digits/Linf/Madry2018Towards.svg"):
        assert (out / page).is_file(), page
    assert len(report.pages) == 2 + len(agg.boards) + len(agg.models)
    assert len(report.plots) == 3


def test_a_site_is_built_into_a_new_nested_folder_and_rebuilt_over_itself(tmp_path):
    card = make_card("Madry2018Towards")
    agg = aggregate([card], [make_record(card, 0.97, 0.8)])
    out = tmp_path / "public" / "robench" / "site"
    first = build_site(agg, out)
    pages = {p: p.read_bytes() for p in first.pages}
    second = build_site(agg, out)
    assert second.pages == first.pages and {p: p.read_bytes() for p in second.pages} == pages
    assert (out / "static" / "board-grid.css").is_file()


def test_rank_and_model_stay_in_view_side_by_side_from_the_left_edge(site):
    out, _, _ = site
    css = (out / "static" / "board-grid.css").read_text(encoding="utf-8")
    sticky = re.findall(r"^table\.board tr > :nth-child\((\d+)\) \{ position: sticky; left: ([\d.]+)rem;", css, re.MULTILINE)
    widths = re.search(r"grid-template-columns: ([^;]+);", css).group(1).split()
    assert sticky == [("1", "0"), ("2", widths[0].removesuffix("rem"))]  # the model column starts where rank ends


def test_index_links_to_every_board_and_every_link_resolves(site):
    out, _, agg = site
    board_links = [a["href"] for tag, a in tags_of(out / "index.html") if tag == "a" and a.get("class") == "board-link"]
    assert sorted(board_links) == sorted(f"boards/{d}_{t}.html" for d, t in agg.boards)
    for page in [out / "index.html", *out.glob("boards/*.html"), *out.glob("models/*/*/*.html")]:
        for tag, attrs in tags_of(page):
            target = attrs.get("href") if tag in ("a", "link") else attrs.get("src") if tag in ("img", "script") else None
            if target is None or target.startswith(("https://", "http://")) and tag == "a":
                continue
            assert "://" not in target and not target.startswith("//"), f"{page}: {target}"
            assert (page.parent / target).resolve().is_file(), f"{page}: broken link {target}"


def test_no_page_loads_anything_from_another_site(site):
    out, _, _ = site
    for page in out.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert "Content-Security-Policy" in html and "default-src 'none'" in html
        for tag, attrs in tags_of(page):
            if tag in ("script", "img", "link", "iframe", "source", "video", "audio"):
                ref = attrs.get("src") or attrs.get("href") or ""
                assert "://" not in ref and not ref.startswith("//"), f"{page}: {tag} loads {ref}"


def test_user_text_is_escaped_and_unsafe_links_are_not_clickable(site):
    out, _, _ = site
    for page in (out / "boards/digits_L2.html", out / "models/digits/L2/Evil2020Script.html", out / "index.html"):
        html = page.read_text(encoding="utf-8")
        assert XSS_TITLE not in html and "<img src=x" not in html and "<b>Mallory" not in html and "<i>x</i>" not in html
        scripts = [a for tag, a in tags_of(page) if tag == "script"]
        assert all(a.get("src") == "../static/board.js" or a.get("type") == "application/json" for a in scripts)
        hrefs = [a.get("href") or "" for tag, a in tags_of(page) if tag == "a"]
        assert not any("javascript" in h.lower() for h in hrefs)
    model = (out / "models/digits/L2/Evil2020Script.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in model
    assert '<span id="paper-link" class="not-a-link">javascript:alert(1)</span>' in model
    good = (out / "models/digits/Linf/Madry2018Towards.html").read_text(encoding="utf-8")
    assert '<a id="paper-link" href="https://arxiv.org/abs/1706.06083"' in good


def test_embedded_curve_data_cannot_close_its_script_tag(tmp_path):
    card = make_card("Closing2020Tag", title="</script><script>alert(1)</script>")
    build_site(aggregate([card], [make_record(card, 0.9, 0.5)]), tmp_path)
    html = (tmp_path / "boards/digits_Linf.html").read_text(encoding="utf-8")
    assert html.count("</script>") == 2  # the JSON block and board.js, nothing from the title


@pytest.mark.parametrize("url, ok", [
    ("https://arxiv.org/abs/1706.06083", True), ("http://example.org/x?a=1&b=2", True),
    ("javascript:alert(1)", False), ("JavaScript:alert(1)", False), (" https://x.org", False),
    ("data:text/html,<script>alert(1)</script>", False), ("//evil.example/x", False), ("https:/x", False),
    ("vbscript:msgbox", False), ("", False), (None, False), ("https://x.org/\nfoo", False),
])
def test_http_url(url, ok):
    assert http_url(url) is ok


def test_model_page_explains_flags_in_words_and_cites(site):
    out, _, _ = site
    html = (out / "models/digits/Linf/Flag2021Masking.html").read_text(encoding="utf-8")
    for flag in ("black_box_beats_white_box", "randomness"):
        assert FLAG_EXPLANATIONS[flag].replace("'", "&#39;") in html
    assert "@article{flag2021, title={Own entry}}" in html  # the card's own BibTeX, verbatim
    clean = (out / "models/digits/Linf/Madry2018Towards.html").read_text(encoding="utf-8")
    assert "No check fired" in clean
    assert ("robench evaluate --model Madry2018Towards --dataset digits --threat-model Linf --version standard "
            "--seed 0 --n-examples 500") in clean


def test_generated_bibtex_and_reproduce_command():
    card = make_card("Madry2018Towards", title="Towards {Deep} Learning", authors=("A. Madry", "D. Tsipras"),
                     venue="ICLR", year=2018, link="https://arxiv.org/abs/1706.06083")
    text = bibtex_entry(card)
    assert text.startswith("@inproceedings{Madry2018Towards,")
    assert "title = {Towards Deep Learning}" in text and "author = {A. Madry and D. Tsipras}" in text
    assert "booktitle = {ICLR}" in text and "year = {2018}" in text and "url = {https://arxiv.org/abs/1706.06083}" in text
    preprint = bibtex_entry(make_card("Pre2021Print", venue="arXiv", link="javascript:x"))
    assert preprint.startswith("@article{") and "journal = {arXiv preprint}" in preprint and "javascript" not in preprint
    numbered = bibtex_entry(make_card("Pre2020Print", venue="arXiv, Oct 2020", link="https://arxiv.org/abs/2010.03593"))
    assert numbered.startswith("@article{") and "journal = {arXiv preprint arXiv:2010.03593}" in numbered
    conference = bibtex_entry(make_card("Conf2021Paper", venue="NeurIPS 2021", link="https://x.org"))
    assert conference.startswith("@inproceedings{") and "booktitle = {NeurIPS}" in conference and "year = {" in conference
    long_venue = bibtex_entry(make_card("Long2019Venue", venue="International Conference on  Machine Learning 2019", year=2019))
    assert "booktitle = {International Conference on Machine Learning}" in long_venue and "year = {2019}" in long_venue
    record = make_record(card, 0.9, 0.5, version="plus", n_examples=100)
    assert reproduce_command("Odd id;rm", record) == (
        "robench evaluate --model 'Odd id;rm' --dataset digits --threat-model Linf --version plus --seed 0 --n-examples 100")


class _Cells(HTMLParser):
    """Each body row's model and its cells' text, keyed by the column of the cell's position."""

    def __init__(self) -> None:
        super().__init__()
        self.columns: list[str] = []
        self.rows: dict[str, dict[str, str]] = {}
        self._model: str | None = None
        self._cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "th" and "data-column" in attrs:
            self.columns.append(attrs["data-column"])
        elif tag == "tr" and "data-model" in attrs:
            self._model, self._cells = attrs["data-model"], []
        elif tag == "td" and self._model is not None:
            self._cells.append("")
            self._in_cell = True

    def handle_data(self, data):
        if self._in_cell:
            self._cells[-1] += data

    def handle_endtag(self, tag):
        if tag == "td":
            self._in_cell = False
        elif tag == "tr" and self._model is not None:
            self.rows[self._model] = dict(zip(self.columns, (c.strip() for c in self._cells)))
            self._model = None


def test_the_extra_data_column_says_yes_or_no(tmp_path):
    extra = make_card("Extra2020Data", additional_data=True)
    own = make_card("Own2020Data", additional_data=False)
    build_site(aggregate([extra, own], [make_record(extra, 0.9, 0.6), make_record(own, 0.9, 0.5)]), tmp_path)
    cells = _Cells()
    cells.feed((tmp_path / "boards/digits_Linf.html").read_text(encoding="utf-8"))
    assert cells.rows["Extra2020Data"]["additional_data"] == "yes"
    assert cells.rows["Own2020Data"]["additional_data"] == "no"
    assert cells.rows["Extra2020Data"]["robust_accuracy"] == "60.00"


def test_every_chart_is_a_labelled_sans_serif_image_with_its_axis_titles_beside_the_plot():
    from leaderboard.plots import heatmap_svg, scatter_svg

    charts = {"curve": curve_svg([[0.0, 0.9], [0.1, 0.35]], board_eps=0.1),
              "scatter": scatter_svg([("A2020a", 0.9, 0.5), ("B2020b", 0.95, 1.0 * 0.95)]),
              "heatmap": heatmap_svg({"fog": [0.9, 0.8, 0.7, 0.6, 0.5]})}
    for name, svg in charts.items():
        root = ET.fromstring(svg)
        assert (root.get("font-family"), root.get("font-size"), root.get("role")) == ("sans-serif", "12", "img"), name
        height = float(root.get("height"))
        rotated = [re.fullmatch(r"translate\((-?[\d.]+),(-?[\d.]+)\) rotate\(-90\)", t.get("transform"))
                   for t in root.iter("{http://www.w3.org/2000/svg}text") if t.get("transform")]
        assert len(rotated) == (0 if name == "heatmap" else 1), name
        for match in rotated:  # the vertical axis title: centred on the plot, inside the picture
            assert 0.3 * height < float(match.group(2)) < 0.7 * height, name
        width = float(root.get("width"))
        for text in root.iter("{http://www.w3.org/2000/svg}text"):
            if text.get("x") is not None:
                assert 0 <= float(text.get("x")) <= width and 0 <= float(text.get("y")) <= height, (name, text.text)


def test_the_scatters_clean_axis_starts_at_the_tens_below_the_lowest_clean_accuracy():
    from leaderboard.plots import scatter_svg

    root = ET.fromstring(scatter_svg([("A2020a", 0.55, 0.3), ("B2020b", 0.97, 0.6)], labels=False))
    ticks = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text") if t.get("text-anchor") == "middle"
             and t.text and t.text.replace(".", "").isdigit()]
    assert ticks[:2] == ["50", "60"] and ticks[5] == "100"
    width = float(root.get("width"))
    assert all(0 < float(c.get("cx")) < width for c in root.iter("{http://www.w3.org/2000/svg}circle"))


def test_the_scatters_vertical_axis_reaches_its_top_tick():
    from leaderboard.plots import scatter_svg

    labels = [t.text for t in ET.fromstring(scatter_svg([("A2020a", 0.9, 0.5), ("B2020b", 0.95, 0.6)], labels=False)).iter()
              if t.tag.endswith("text") and t.get("text-anchor") == "end"]
    assert labels == ["0", "20", "40", "60"]  # the highest robust accuracy, 60%, is the top of the axis


def test_the_heat_maps_mean_column_stands_apart():
    from leaderboard.plots import heatmap_svg

    rects = [r for r in ET.fromstring(heatmap_svg({"fog": [0.9, 0.8, 0.7, 0.6, 0.5]})).iter()
             if r.tag.endswith("rect") and r.find("{http://www.w3.org/2000/svg}title") is not None]
    xs = [float(r.get("x")) for r in rects]
    widths = [float(r.get("width")) for r in rects]
    steps = [b - a for a, b in zip(xs, xs[1:])]
    assert len(rects) == 6 and steps[:4] == [steps[0]] * 4 and steps[4] == steps[0] + 4 and widths[5] == widths[0] - 4
    tips = [r.find("{http://www.w3.org/2000/svg}title").text for r in rects]
    assert tips == ["fog, severity 1: 90.00%", "fog, severity 2: 80.00%", "fog, severity 3: 70.00%",
                    "fog, severity 4: 60.00%", "fog, severity 5: 50.00%", "fog, mean: 70.00%"]
    root = ET.fromstring(heatmap_svg({"fog": [0.9, 0.8, 0.7, 0.6, 0.5]}))
    assert root.find("{http://www.w3.org/2000/svg}title").text == "Accuracy (%) per corruption and severity"
    inks = {t.text: t.get("fill") for t in root.iter("{http://www.w3.org/2000/svg}text") if t.get("fill")}
    assert inks["90.0"] == "#111111" and inks["50.0"] == "#ffffff"  # dark figures on light cells, white on red


def test_curve_svg_is_well_formed_and_marks_the_board_eps():
    curve = [[0.0, 0.9], [0.05, 0.6], [0.1, 0.35], [0.2, 0.0]]
    svg = curve_svg(curve, board_eps=0.1)
    root = ET.fromstring(svg)
    ns = {"s": "http://www.w3.org/2000/svg"}
    points = root.find("s:polyline", ns).get("points").split()
    assert len(points) == 4
    xs = [float(p.split(",")[0]) for p in points]
    ys = [float(p.split(",")[1]) for p in points]
    assert xs == sorted(xs) and ys == sorted(ys)  # accuracy falls as eps grows: y (down) grows
    assert "board eps 0.1" in svg
    assert nice_ticks(0.2) == [0.0, 0.05, 0.1, 0.15, 0.2]
    assert nice_ticks(8 / 255)[-1] >= 8 / 255
    with pytest.raises(ValueError, match="accuracy in"):
        curve_svg([[0.0, 1.5]])
    with pytest.raises(ValueError, match="no points"):
        curve_svg([])


def test_build_notes_list_warnings_and_unreadable_files(site):
    out, _, _ = site
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "results/bad.json: not valid JSON" in index


def test_300_model_board_builds_quickly(tmp_path):
    """Figures for the record; the hard 10 s threshold lives in benchmarks/leaderboard_scale.py."""
    cards, records = synthetic_board(300)
    start = time.perf_counter()
    report = build_site(aggregate(cards, records), tmp_path)
    seconds = time.perf_counter() - start
    print(f"\n300-model board: aggregate + site in {seconds:.2f} s, {len(report.pages)} pages")
    rows = re.findall(r'<tr role="row" data-model=', (tmp_path / "boards/digits_Linf.html").read_text(encoding="utf-8"))
    assert len(rows) == 300
    assert seconds < 60, "far beyond the 10 s target: something is badly slow"


def test_flags_show_the_numbers_behind_them(tmp_path):
    """"Square broke 3 of 500 points": a reader can judge a flag's weight on the board and the model page."""
    card = make_card("Masked2020Model")
    record = make_record(card, 0.99, 0.70, flags=["black_box_beats_white_box"])
    record.check_details = {"black_box_beats_white_box": {"points_only_black_box": 3, "share_only_black_box": 0.006,
                                                          "threshold": 0.002}}
    build_site(aggregate([card], [record]), tmp_path)
    evidence = "Square broke 3 of 500 points that every gradient attack missed."
    model_page = (tmp_path / "models" / "digits" / "Linf" / "Masked2020Model.html").read_text()
    assert evidence in model_page
    board_page = (tmp_path / "boards" / "digits_Linf.html").read_text()
    assert re.search(r'<span class="flag" title="[^"]*' + re.escape(evidence) + r'">black_box_beats_white_box</span>',
                     board_page)


@pytest.mark.parametrize("flag, details, words", [
    ("non_finite_logits", {"points_not_evaluable": 4}, "4 of 500 points had NaN or infinite logits."),
    ("zero_gradients", {"fraction_zero_cross_entropy": 0.254, "fraction_zero_margin": 0.5},
     "25% of the probed points had a zero cross-entropy gradient, 50% a zero margin gradient."),
    ("randomness", {"prediction_changes": 7, "passes": 3, "max_logit_difference": 0.01234},
     "7 predictions changed over 3 passes; logits moved by up to 0.0123."),
    ("too_few_classes", {"num_classes": 3, "needed": 10}, "The model has 3 classes; the protocol's attacks need 10."),
    ("randomness", {"passes": 3}, ""),  # a detail missing: no half sentence
    ("zero_gradients", {"fraction_zero_cross_entropy": "much", "fraction_zero_margin": 0.5}, ""),
    ("zero_gradients", {"fraction_zero_cross_entropy": None, "fraction_zero_margin": 0.5}, ""),
])
def test_every_flag_states_its_numbers(flag, details, words):
    card = make_card("Flagged2020Model")
    record = make_record(card, 0.9, 0.5, flags=[flag])
    record.check_details = {flag: details}
    assert flag_evidence(flag, record) == words
    record.check_details = None
    assert flag_evidence(flag, record) == ""


def test_a_claim_that_was_not_reproduced_shows_both_numbers_on_the_board(tmp_path):
    from model_zoo.cards import Reported

    card = make_card("Claim2020Model")
    card = card.model_copy(update={"reported": Reported(clean_accuracy=0.9, robust_accuracy=0.61)})
    build_site(aggregate([card], [make_record(card, 0.9, 0.45)]), tmp_path)
    words = "Reported 61.00%, measured 45.00% on 500 points."
    board = (tmp_path / "boards" / "digits_Linf.html").read_text(encoding="utf-8")
    assert re.search(r'<span class="flag" title="[^"]*' + re.escape(words) + r'">reported_not_reproduced</span>', board)
    assert words in (tmp_path / "models/digits/Linf/Claim2020Model.html").read_text(encoding="utf-8")
    assert flag_evidence("reported_not_reproduced", make_record(card, 0.9, 0.45)) == ""  # no card, no claim


def test_the_index_lists_boards_with_results_first(tmp_path):
    card = make_card("Only2020Model")
    build_site(aggregate([card], [make_record(card, 0.9, 0.5)]), tmp_path)
    index = (tmp_path / "index.html").read_text()
    links = re.findall(r'href="boards/([a-z0-9]+_[A-Za-z0-9]+)\.html"', index)
    assert links[0] == "digits_Linf" and len(set(links)) > 1


def test_model_page_shows_the_baseline_and_the_stability_metrics(tmp_path):
    """The PGD-CE baseline and the local-stability metrics were recorded but appeared nowhere on the site."""
    import dataclasses

    card = make_card("Metric2020Model")
    record = dataclasses.replace(make_record(card, 0.9, 0.5), baselines={"pgd-ce": 0.61},
                                 metrics={"noise_accuracy": 0.88, "jacobian_norm": 12.345678, "unknown": 3.0})
    build_site(aggregate([card], [record]), tmp_path)
    page = (tmp_path / "models/digits/Linf/Metric2020Model.html").read_text()
    section = page[page.index('<section id="analysis">'):page.index('<section id="card">')]
    assert "<dt>PGD-CE baseline</dt><dd><strong>61.00%</strong>" in section
    assert "<dt>Accuracy under random noise</dt><dd><strong>88.00%</strong>" in section
    assert "<dt>Jacobian norm</dt><dd><strong>12.35</strong>" in section and "unknown" not in section
    build_site(aggregate([card], [make_record(card, 0.9, 0.5)]), tmp_path / "none")
    assert 'id="analysis"' not in (tmp_path / "none/models/digits/Linf/Metric2020Model.html").read_text()


def test_scatter_plots_each_ranked_model_once_with_its_name_escaped():
    from leaderboard.plots import scatter_svg

    svg = scatter_svg([("A2020a", 0.98, 0.5), ("<b>B</b>", 0.9, 0.4), ("Bad2020x", 0.5, 0.7), ("Nan2020x", float("nan"), 0.1)])
    assert svg.count("<circle") == 2 and "&lt;b&gt;B&lt;/b&gt;: clean 90.00%, robust 40.00%" in svg and "<b>" not in svg
    assert "A2020a</text>" in svg  # few models: named beside their dots
    many = scatter_svg([(f"M{i}", 0.9, 0.5) for i in range(20)])
    assert many.count("<circle") == 20 and ">M5</text>" not in many  # many models: names only as tooltips
    with pytest.raises(ValueError, match="no model"):
        scatter_svg([("Bad2020x", 0.5, 0.7)])


def _name_boxes(svg):
    import re

    dots = [(float(x), float(y)) for x, y in re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)"', svg)]
    names = re.findall(r'<text x="([\d.]+)" y="([\d.]+)" text-anchor="(end|start)" font-size="11">([^<]+)</text>', svg)
    boxes = []
    for x, y, anchor, name in names:
        width = 6.2 * len(name)
        left = float(x) - width if anchor == "end" else float(x)
        boxes.append((left, left + width, float(y), name))
    return dots, boxes


def _assert_nothing_covered(points, dots, boxes):
    from leaderboard.plots import _BOTTOM, _H, _TOP

    for k, (left, right, base, name) in enumerate(boxes):
        assert base - 11 >= _TOP and base <= _H - _BOTTOM - 2, name  # inside the frame, clear of the axis numbers
        own = dots[[p[0] for p in points].index(name)]
        for dx, dy in dots:
            if (dx, dy) != own:
                assert not (left - 4 < dx < right + 4 and base - 15 < dy < base + 4), (name, dx, dy)
        for other in boxes[k + 1:]:
            assert not (abs(base - other[2]) < 12 and left < other[1] and other[0] < right), (name, other[3])


def test_a_dot_name_never_covers_another_dot_or_name():
    from leaderboard.plots import scatter_svg

    # the digits L2 board of 2026-11-30: Zhang2019Theoretically's dot sat under Madry2018Towards' name
    points = [("Madry2018Towards", 0.988, 0.514), ("Zhang2019Theoretically", 0.970, 0.512),
              ("Zhang2020Towards", 0.948, 0.366), ("LeCun1998Gradient", 0.988, 0.132)]
    dots, boxes = _name_boxes(scatter_svg(points))
    assert {b[3] for b in boxes} == {name for name, *_ in points}  # room for every name here
    madry = next(b for b in boxes if b[3] == "Madry2018Towards")
    assert madry[2] != dots[0][1] + 4  # not on its dot's line, where it would cover Zhang2019Theoretically's dot
    _assert_nothing_covered(points, dots, boxes)
    crowded = [(f"Model{i}LongName2020", 0.95 + 0.002 * (i % 3), 0.5 + 0.004 * i) for i in range(8)]
    dots, boxes = _name_boxes(scatter_svg(crowded))
    assert 0 < len(boxes) < len(crowded)  # some names fit, the others are left to the tooltips
    _assert_nothing_covered(crowded, dots, boxes)
    linf = [("Zhang2019Theoretically", 0.972, 0.696), ("Zhang2020Towards", 0.934, 0.69), ("Madry2018Towards", 0.994, 0.67),
            ("Wong2020Fast", 0.994, 0.526), ("Goodfellow2015Explaining", 0.99, 0.388), ("Madry2018Towards_mlp20", 0.892, 0.3),
            ("Ross2018Improving", 0.898, 0.022), ("LeCun1998Gradient", 0.988, 0.002),
            ("LeCun1998Gradient_mlp20", 0.968, 0.002), ("Papernot2016Distillation", 0.966, 0.0)]  # the digits Linf board
    dots, boxes = _name_boxes(scatter_svg(linf))
    assert len(boxes) >= 7
    _assert_nothing_covered(linf, dots, boxes)
