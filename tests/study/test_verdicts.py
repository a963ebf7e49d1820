import pandas as pd

from sedlib.study.verdicts import verdict_differences


def table(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["claim", "split", "verdict"])


def test_agreeing_verdicts_give_no_difference():
    rows = [("diversity", "C-1", "better"), ("pds_vs_bma", "digits", "undetermined")]
    # extra columns of a published evidence.csv and another row order do not matter
    committed = table(rows[::-1]).assign(difference=[0.1, 0.2])
    assert verdict_differences(table(rows), committed) == []


def test_each_changed_missing_or_new_verdict_is_named():
    produced = table([("diversity", "C-1", "better"), ("diversity", "C-5", "worse"), ("pds_vs_bma", "C-1", "better")])
    committed = table(
        [("diversity", "C-1", "better"), ("diversity", "C-5", "equivalent"), ("accuracy_soup", "C-1", "worse")]
    )
    assert sorted(verdict_differences(produced, committed)) == [
        "accuracy_soup on C-1: committed worse, produced (none)",
        "diversity on C-5: committed equivalent, produced worse",
        "pds_vs_bma on C-1: committed (none), produced better",
    ]
