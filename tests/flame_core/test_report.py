from flame_core.report import fmt, markdown_table, text_table


def test_tables_format_numbers_and_nan():
    md = markdown_table(["task", "auroc"], [["mortality", 0.81234], ["los", float("nan")]])
    assert md.splitlines()[2] == "| mortality | 0.812 |"
    assert md.splitlines()[3] == "| los | - |"
    txt = text_table(["a", "bb"], [["x", 1.0]])
    assert txt.splitlines()[0].startswith("a") and "1.000" in txt
    assert fmt(3) == "3"
