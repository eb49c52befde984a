"""robench.leaderboard: result records + model cards -> CSV tables and a static site; de facto format interchange."""
from .aggregate import ALL_RESULTS_COLUMNS, BOARD_COLUMNS, Aggregation, Board, ModelResults, aggregate, write_csvs
from .entries import ImportedListing, external_from_dict, read_listing
from .interchange import ImportReport, export_dir, import_dir
from .site import SiteReport, build_site
from .sources import LoadedResults, load_results, load_submitted_external

__all__ = [
    "ALL_RESULTS_COLUMNS", "BOARD_COLUMNS", "Aggregation", "Board", "ModelResults", "aggregate", "write_csvs",
    "ImportedListing", "read_listing", "external_from_dict", "ImportReport", "export_dir", "import_dir",
    "SiteReport", "build_site", "LoadedResults", "load_results", "load_submitted_external",
]
