"""Imported results shown truthfully: footnotes as their authors meant them, pages that say what robench did
not do, boards without columns nobody filled, one venue year, BibTeX types, CSV numbers without float noise."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from leaderboard.aggregate import aggregate
from leaderboard.interchange import import_dir
from leaderboard.rich_text import footnote_html, footnote_text
from leaderboard.site import build_site, venue_and_year
from leaderboard.sources import load_results
from leaderboard.synthetic import make_card, make_record
from model_zoo.cards import PaperListing
from test_leaderboard_interchange import _quirk_corpus


def test_footnote_html_keeps_links_and_line_breaks_and_renders_latex_as_mathml():
    html = str(footnote_html('Robust at 8/255.<br>7.40% at \\(\\ell_{\\infty}\\), see <a href="https://x.org/p?a=1&amp;b=2">the paper</a>.'))
    assert "<br>" in html and '<a href="https://x.org/p?a=1&amp;b=2" rel="nofollow noopener noreferrer">the paper</a>' in html
    assert re.search(r'<math xmlns="http://www.w3.org/1998/Math/MathML" display="inline"><mrow><msub><mi>ℓ</mi>', html)
    assert "\\(" not in html and "\\ell" not in html
    block = str(footnote_html("$$a^2$$ and \\[b\\] but $5 stays"))
    assert block.count('display="block"') == 2 and "$5 stays" in block


@pytest.mark.parametrize("payload, gone", [
    ('<script>alert(1)</script>', "alert"), ('<img src=x onerror="alert(1)">', "onerror"),
    ('<a href="javascript:alert(1)">x</a>', "javascript"), ('<a href="https://ok.org" onclick="alert(1)">x</a>', "onclick"),
    ('<svg onload="alert(1)"></svg>', "svg"), ('<p style="background:url(x)">x</p>', "style"),
    ('\\(\\text{<script>alert(1)</script>}\\)', "script"), ('<a href="data:text/html,x">x</a>', "data:"),
    ('<iframe src="https://evil.org"></iframe>', "iframe"), ('<math><mi onclick="alert(1)">x</mi></math>', "onclick"),
])
def test_footnote_html_drops_every_way_to_run_code(payload, gone):
    assert gone not in str(footnote_html(payload))


def test_footnote_html_keeps_plain_http_links_and_drops_other_schemes():
    kept = str(footnote_html('<a href="http://x.org/p">old site</a>'))
    assert '<a href="http://x.org/p" rel="nofollow noopener noreferrer">old site</a>' in kept
    for link in ("ftp://x.org/f", "mailto:a@x.org", "tel:123", "ssh://x.org"):
        assert str(footnote_html(f'<a href="{link}">x</a>')) == '<a rel="nofollow noopener noreferrer">x</a>'


def test_footnote_html_of_nothing_is_empty():
    assert footnote_html(None) == "" and footnote_html("") == ""


def test_latex_it_cannot_convert_stays_as_written():
    html = str(footnote_html("bound \\(x^\\) and \\[\\left( y\\] and \\(z\\)"))
    assert html.startswith("bound \\(x^\\) and \\[\\left( y\\] and <math ")


def test_footnote_text_reads_as_one_line_of_words():
    assert footnote_text("Robust at 8/255.<br>7.40% robust, <b>bold</b> &amp; more") == "Robust at 8/255. 7.40% robust, bold & more"
    assert footnote_text(None) == "" and footnote_text("") == ""
    assert footnote_text("first<BR>second<Br/>third") == "first second third"


def test_venue_and_year_once():
    assert venue_and_year(PaperListing(venue="NeurIPS 2021", year=2021)) == "NeurIPS 2021"
    assert venue_and_year(PaperListing(venue="ICLR", year=2018)) == "ICLR 2018"
    assert venue_and_year(PaperListing(venue="", year=None)) == ""


@pytest.fixture(scope="module")
def imported_site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imported")
    _quirk_corpus(root / "src")
    import_dir(root / "src", root / "results")
    loaded = load_results(root / "results")
    zoo = make_card("Absent2021Unreliable", "cifar10", "Linf", title="Evaluated by robench too")
    robench = make_record(zoo, 0.90, 0.55)
    aggregation = aggregate([*loaded.listed], [*loaded.records, robench], loaded.external)
    build_site(aggregation, root / "site", loaded.import_notes)
    return root / "site"


def test_an_imported_model_page_says_what_robench_did_not_do(imported_site):
    page = (imported_site / "models/cifar10/Linf/Html2021Footnote.html").read_text(encoding="utf-8")
    assert "Imported from another leaderboard" in page and "cifar10/Linf/Html2021Footnote.json" in page
    assert "robench ran no check on this imported result" in page and "No check fired" not in page
    assert "robench evaluate" not in page and "Reproduce" not in page
    assert "<td>not given</td>" in page  # version and seed
    assert "NeurIPS 2019 2019" not in page and "NeurIPS 2019" in page
    assert '<a href="https://x.org/a?b=1&amp;c=2" rel="nofollow noopener noreferrer">extra data</a>' in page
    latex = (imported_site / "models/cifar10/Linf/Latex2021Footnote.html").read_text(encoding="utf-8")
    assert "<math" in latex and "\\ell" not in latex


def test_an_imported_result_and_robenchs_own_stand_side_by_side(imported_site):
    page = (imported_site / "models/cifar10/Linf/Absent2021Unreliable.html").read_text(encoding="utf-8")
    assert "<td>imported</td>" in page and "<td>robench</td>" in page
    board = (imported_site / "data/cifar10_Linf.csv").read_text(encoding="utf-8")
    row = next(r for r in csv.DictReader(board.splitlines()) if r["model_id"] == "Absent2021Unreliable")
    assert float(row["robust_accuracy"]) == pytest.approx(0.55)  # the board row is robench's evaluation


def test_a_board_of_imported_rows_hides_the_columns_it_has_no_data_for(imported_site):
    board = (imported_site / "boards/cifar10_L2.html").read_text(encoding="utf-8")
    headers = re.findall(r'data-column="([^"]+)"', board.split("<tbody")[0])
    assert "apgd-ce" not in headers and "n_examples" not in headers and "date" not in headers and "at_eps" not in headers
    assert headers[:3] == ["rank", "model_id", "clean_accuracy"] and "flags" in headers
    linf = (imported_site / "boards/cifar10_Linf.html").read_text(encoding="utf-8")
    assert "apgd-ce" in re.findall(r'data-column="([^"]+)"', linf.split("<tbody")[0])  # robench's row fills them there
    assert 'class="note" title="MALT found more."' in linf


def test_columns_with_values_stay_even_when_every_value_is_zero_or_no(tmp_path):
    """Only unfilled optional columns go: a board of broken, no-extra-data models keeps Robust % and Extra data."""
    from leaderboard.aggregate import CORRUPTION_COLUMNS, VERIFICATION_COLUMNS
    from leaderboard.site import _BOARD_VIEW, _shown_columns

    cards = [make_card(f"Zero{2020 + i}Model", "cifar10", "Linf", additional_data=False) for i in range(3)]
    aggregation = aggregate(cards, [make_record(c, 0.9, 0.0) for c in cards])
    shown = _shown_columns(aggregation.boards[("cifar10", "Linf")], has_curves=True)
    # attack columns at 0.00 included; the corruptions and verification figures, which no record here fills, left out
    assert shown == {column for column, *_ in _BOARD_VIEW} - set(CORRUPTION_COLUMNS) - set(VERIFICATION_COLUMNS)


def test_csv_numbers_carry_no_float_noise(imported_site):
    for path in (imported_site / "data").glob("*.csv"):
        for number in re.findall(r"\d+\.\d+", path.read_text(encoding="utf-8")):
            assert len(number.replace(".", "").lstrip("0")) <= 8, (path.name, number)


def test_import_notes_reach_the_index(imported_site):
    index = (imported_site / "index.html").read_text(encoding="utf-8")
    assert "taken as the board&#39;s 8/255" in index and "row &#39;Nobody2020Listed&#39; matches no imported corruptions file" in index
