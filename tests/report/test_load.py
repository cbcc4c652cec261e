

def test_the_report_reads_only_columns_the_schema_defines():
    from mismatch.report.load import CASES_READ, CLASSES_READ
    from mismatch.results.schema import CASE_COLUMNS, CLASS_COLUMNS

    assert CASES_READ[0] == CLASSES_READ[0] == "trial_id"
    assert set(CASES_READ[1:]) <= set(CASE_COLUMNS) and set(CLASSES_READ[1:]) <= set(CLASS_COLUMNS)
