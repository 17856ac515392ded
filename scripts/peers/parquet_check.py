"""Reads a Parquet file airlock exported with pyarrow and with DuckDB (both from PyPI) and
compares it with the CSV export of the same range (the historian's own query): the same rows,
values and qualities. Prints one line per finding; exits 1 on the first difference.

usage: parquet_check.py FILE.parquet FILE.csv
"""

import sys

import duckdb
import pyarrow.compute as pc
import pyarrow.parquet as pq

parquet, csv = sys.argv[1], sys.argv[2]


def fail(why):
    print("FAILED:", why, flush=True)
    sys.exit(1)


# pyarrow: the schema as documented, dictionary-encoded tags, bounded row groups.
f = pq.ParquetFile(parquet)
schema = f.schema_arrow
names = [field.name for field in schema]
if names != ["time", "tag", "value", "text", "quality", "reason"]:
    fail(f"columns {names}")
if str(schema.field("time").type) != "timestamp[ms, tz=UTC]":
    fail(f"time is {schema.field('time').type}")
groups = f.metadata.num_row_groups
largest = max(f.metadata.row_group(i).num_rows for i in range(groups))
encodings = f.metadata.row_group(0).column(1).encodings
if "RLE_DICTIONARY" not in encodings:
    fail(f"tag encodings {encodings}")
table = f.read()
print(f"pyarrow: {table.num_rows} rows in {groups} row groups (largest {largest}), tag column {encodings}", flush=True)
by_tag = table.group_by("tag").aggregate([("value", "sum"), ("value", "count"), ("time", "count")])

# DuckDB: the same file against the CSV, row for row (time, tag, value, quality).
con = duckdb.connect()
con.execute(f"create view p as select epoch_ms(time) as t, tag, value, quality from read_parquet('{parquet}')")
con.execute(
    f"create view c as select epoch_ms(cast(time as timestamptz)) as t, tag, value, quality "
    f"from read_csv('{csv}', header=true, columns={{'time': 'VARCHAR', 'tag': 'VARCHAR', 'value': 'DOUBLE', 'quality': 'VARCHAR'}})"
)
(rows_p,) = con.execute("select count(*) from p").fetchone()
(rows_c,) = con.execute("select count(*) from c").fetchone()
if rows_p != rows_c or rows_p != table.num_rows:
    fail(f"rows: parquet {rows_p} (pyarrow {table.num_rows}), csv {rows_c}")
(only_p,) = con.execute("select count(*) from (select * from p except all select * from c)").fetchone()
(only_c,) = con.execute("select count(*) from (select * from c except all select * from p)").fetchone()
if only_p or only_c:
    fail(f"{only_p} rows only in the Parquet file, {only_c} only in the CSV")
(bad,) = con.execute("select count(*) from p where quality <> 'good'").fetchone()
(reasons,) = con.execute(f"select count(*) from read_parquet('{parquet}') where quality <> 'good' and reason is not null").fetchone()
if bad == 0 or reasons != bad:
    fail(f"{bad} rows not good, {reasons} with a reason")
# pyarrow's sums per tag agree with DuckDB's over the CSV.
for row in by_tag.to_pylist():
    (s, n) = con.execute("select sum(value), count(value) from c where tag = ?", [row["tag"]]).fetchone()
    if n != row["value_count"] or abs((s or 0) - (row["value_sum"] or 0)) > 1e-6 * max(1.0, abs(s or 0)):
        fail(f"{row['tag']}: pyarrow {row['value_sum']}/{row['value_count']}, duckdb over csv {s}/{n}")
print(f"duckdb: {rows_p} rows equal to the CSV's, row for row; {bad} not good, each with its reason", flush=True)
