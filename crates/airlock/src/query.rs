//! `airlock query` and `airlock export`: read the historian in a data folder, also while a
//! gateway is writing to it (the historian is opened read-only).

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_model::Timestamp;
use airlock_store::{HistorianReader, StoreError, StoredSample};
use anyhow::{Context as _, bail};

use crate::parse_duration;

#[derive(clap::Args)]
pub struct QueryArgs {
    /// The data folder (`data_dir` of the config; the demo's is `airlock-demo/data`).
    #[arg(long)]
    data: PathBuf,
    /// The tag: its full asset path or its end (`press1/speed`).
    #[arg(long)]
    tag: Option<String>,
    /// Start: `-1h`, `-30m`, `now`, `2026-11-28T12:00:00Z`, `2026-11-28` or epoch milliseconds.
    #[arg(long, default_value = "-1h", allow_hyphen_values = true)]
    from: String,
    /// End (exclusive), same forms as --from.
    #[arg(long, default_value = "now", allow_hyphen_values = true)]
    to: String,
    /// Aggregate per interval (e.g. 1m): count, min, max, avg, first, last, time-weighted avg.
    #[arg(long, value_parser = parse_duration)]
    every: Option<Duration>,
    /// With --every: the value interpolated at each interval's start instead of aggregates.
    #[arg(long, requires = "every")]
    interpolate: bool,
    /// The newest value of every tag (or of the tags matching --tag).
    #[arg(long, conflicts_with_all = ["every", "interpolate"])]
    last: bool,
    /// List the tags the historian holds.
    #[arg(long, conflicts_with_all = ["every", "interpolate", "last"])]
    tags: bool,
    /// Print CSV instead of a table.
    #[arg(long)]
    csv: bool,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The data folder.
    #[arg(long)]
    data: PathBuf,
    /// Only tags whose path contains this text.
    #[arg(long)]
    tag: Option<String>,
    /// Start, as for `query`.
    #[arg(long, default_value = "-1d", allow_hyphen_values = true)]
    from: String,
    /// End (exclusive), as for `query`.
    #[arg(long, default_value = "now", allow_hyphen_values = true)]
    to: String,
    /// The file to write.
    #[arg(long)]
    out: PathBuf,
    /// `csv` (`time,tag,value,quality`) or `parquet` (time, tag, value, text, quality, reason);
    /// by default from the file's extension (`.parquet`), else CSV.
    #[arg(long)]
    format: Option<Format>,
}

/// What `export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Parquet,
}

pub fn query(args: QueryArgs) -> anyhow::Result<()> {
    let historian = open(&args.data)?;
    let now = Timestamp::now();
    let mut table = Table::new(args.csv);
    if args.tags {
        table.header(&["tag"]);
        for t in historian.tags()? {
            table.row(vec![t]);
        }
        return table.print();
    }
    if args.last {
        table.header(&["tag", "time", "value", "quality"]);
        let filter = args.tag.as_deref().unwrap_or("");
        for (path, s) in historian.last_values()?.into_iter().filter(|(p, _)| p.contains(filter)) {
            table.row(vec![path, s.time.to_string(), value_text(&s), s.quality.to_string()]);
        }
        return table.print();
    }
    let Some(pattern) = &args.tag else { bail!("say which tag with --tag (or use --tags to list them)") };
    let tag = resolve_tag(&historian, pattern)?;
    let (from, to) = (parse_time(&args.from, now)?, parse_time(&args.to, now)?);
    eprintln!("{tag}, {from} to {to}");
    match args.every {
        None => {
            table.header(&["time", "value", "quality"]);
            for_each_raw(&historian, &tag, from, to, |s| {
                table.row(vec![s.time.to_string(), value_text(s), s.quality.to_string()]);
                Ok(())
            })?;
        }
        Some(every) if args.interpolate => {
            let step = i64::try_from(every.as_nanos()).unwrap_or(i64::MAX).max(1);
            let steps = u64::try_from(to.0.saturating_sub(from.0)).unwrap_or(0).div_ceil(step.unsigned_abs());
            if steps > airlock_store::historian::BUCKETS_MAX {
                bail!(
                    "--every {every:?} from {from} to {to} is {steps} points; at most {} in one query: choose a longer \
                     --every or a shorter range",
                    airlock_store::historian::BUCKETS_MAX
                );
            }
            let times: Vec<Timestamp> =
                (0..).map(|i| Timestamp(from.0.saturating_add(i * step))).take_while(|t| *t < to).collect();
            table.header(&["time", "interpolated"]);
            for (t, v) in times.iter().zip(historian.interpolate(&tag, &times)?) {
                table.row(vec![t.to_string(), number(v)]);
            }
        }
        Some(every) => {
            table.header(&["start", "count", "min", "max", "avg", "first", "last", "twa"]);
            for b in historian.aggregate(&tag, from, to, every)? {
                let cells = [b.min, b.max, b.avg, b.first, b.last, b.twa].map(number);
                let mut row = vec![Timestamp::from_millis(b.start_ms).to_string(), b.count.to_string()];
                row.extend(cells);
                table.row(row);
            }
        }
    }
    table.print()
}

pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    let historian = open(&args.data)?;
    let now = Timestamp::now();
    let (from, to) = (parse_time(&args.from, now)?, parse_time(&args.to, now)?);
    let filter = args.tag.as_deref().unwrap_or("");
    let tags: Vec<String> = historian.tags()?.into_iter().filter(|t| t.contains(filter)).collect();
    let format = args.format.unwrap_or(if args.out.extension().is_some_and(|e| e == "parquet") {
        Format::Parquet
    } else {
        Format::Csv
    });
    let mut progress = Progress::new(tags.len());
    let mut rows = 0u64;
    match format {
        Format::Csv => {
            let file = std::fs::File::create(&args.out).with_context(|| format!("create {}", args.out.display()))?;
            let mut out = std::io::BufWriter::new(file);
            writeln!(out, "time,tag,value,quality")?;
            for (i, tag) in tags.iter().enumerate() {
                for_each_raw(&historian, tag, from, to, |s| {
                    // The stored bits (as the Parquet export keeps them): an export is for
                    // computing on, not for reading.
                    let value = s.value.map(|v| v.to_string()).unwrap_or_default();
                    writeln!(out, "{},{},{},{}", s.time, tag, value, s.quality.word())?;
                    rows += 1;
                    Ok(())
                })?;
                progress.show(i + 1, rows);
            }
            out.flush().with_context(|| format!("write {}", args.out.display()))?;
        }
        Format::Parquet => {
            let mut out = crate::parquet_export::ParquetOut::create(&args.out)?;
            for (i, tag) in tags.iter().enumerate() {
                let name = crate::parquet_export::tag_bytes(tag);
                for_each_raw(&historian, tag, from, to, |s| {
                    rows += 1;
                    out.push(&name, s)
                })?;
                progress.show(i + 1, rows);
            }
            out.finish().with_context(|| format!("write {}", args.out.display()))?;
        }
    }
    progress.done();
    eprintln!("exported {rows} rows of {} tags to {}", tags.len(), args.out.display());
    Ok(())
}

/// Calls `f` on every stored sample of `tag` in `[from, to)`, in time order, reading a window at
/// a time (an hour to start with, halved while a window holds more than `WINDOW_ROWS` rows,
/// doubled while it holds less than a tenth of that), so memory holds one window, whatever the
/// range.
fn for_each_raw(
    historian: &HistorianReader,
    tag: &str,
    from: Timestamp,
    to: Timestamp,
    mut f: impl FnMut(&StoredSample) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    const WINDOW_ROWS: usize = 200_000;
    let (min, max) = (1_000_000_000i64, 86_400_000_000_000i64);
    let mut window = 3_600_000_000_000i64;
    let mut at = from;
    while at < to {
        let end = Timestamp(at.0.saturating_add(window).min(to.0));
        let rows = historian.raw(tag, at, end)?;
        for s in &rows {
            f(s)?;
        }
        if rows.len() > WINDOW_ROWS {
            window = (window / 2).max(min);
        } else if rows.len() < WINDOW_ROWS / 10 {
            window = window.saturating_mul(2).min(max);
        }
        at = end;
    }
    Ok(())
}

fn open(dir: &Path) -> anyhow::Result<HistorianReader> {
    let historian = dir.join("historian");
    HistorianReader::open(&historian).map_err(|e| match &e {
        StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound && !historian.exists() => {
            anyhow::anyhow!(
                "{}: no historian here; is this a gateway's data folder (its [store] data_dir)?",
                dir.display()
            )
        }
        _ => e.into(),
    })
}

/// The one tag whose path is `pattern` or ends with `/pattern`.
fn resolve_tag(historian: &HistorianReader, pattern: &str) -> anyhow::Result<String> {
    let tags = historian.tags()?;
    match airlock_model::find_path(tags.iter().map(String::as_str), pattern) {
        Ok(one) => Ok(one.to_owned()),
        Err(none) if none.is_empty() => {
            bail!("no tag is {pattern:?} or ends with \"/{pattern}\"; `airlock query --data DIR --tags` lists them")
        }
        Err(many) => {
            let list: Vec<&str> = many.iter().take(10).copied().collect();
            bail!("{pattern:?} matches {} tags, say which: {}", many.len(), list.join(", "))
        }
    }
}

/// `now`, `-1h` (relative to now), RFC 3339, a date, or epoch milliseconds.
pub fn parse_time(s: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    Timestamp::parse_at(s, now).map_err(|e| anyhow::anyhow!(e))
}

fn value_text(s: &StoredSample) -> String {
    number(s.value)
}

/// A value as people read it ([`airlock_model::readable`]: at most 15 significant digits, so
/// a value stored at a stated resolution reads 0.57, not 0.5700000000000001).
fn number(v: Option<f64>) -> String {
    v.map(|v| airlock_model::readable(v).to_string()).unwrap_or_default()
}

/// A table printed aligned, or as CSV.
struct Table {
    csv: bool,
    rows: Vec<Vec<String>>,
    left_out: u64,
}

impl Table {
    fn new(csv: bool) -> Self {
        Self { csv, rows: Vec::new(), left_out: 0 }
    }

    fn header(&mut self, cells: &[&str]) {
        if self.csv {
            let _ = writeln!(std::io::stdout().lock(), "{}", cells.join(","));
        } else {
            self.rows.insert(0, cells.iter().map(|c| c.to_string()).collect());
        }
    }

    /// A row: printed at once as CSV; kept to align the columns otherwise, at most
    /// `ALIGNED_ROWS_MAX` (then counted, and `--csv` named for the rest).
    fn row(&mut self, cells: Vec<String>) {
        if self.csv {
            let mut line = cells.join(",");
            line.push('\n');
            let _ = std::io::stdout().lock().write_all(line.as_bytes());
        } else if self.rows.len() <= ALIGNED_ROWS_MAX {
            self.rows.push(cells);
        } else {
            self.left_out += 1;
        }
    }

    fn print(&self) -> anyhow::Result<()> {
        let mut out = String::new();
        let widths: Vec<usize> = (0..self.rows.first().map_or(0, Vec::len))
            .map(|i| self.rows.iter().map(|r| r.get(i).map_or(0, String::len)).max().unwrap_or(0))
            .collect();
        for row in &self.rows {
            if self.csv {
                out += &row.join(",");
            } else {
                for (cell, w) in row.iter().zip(&widths) {
                    let _ = write!(out, "{cell:<w$}  ");
                }
                out.truncate(out.trim_end().len());
            }
            out.push('\n');
        }
        if self.left_out > 0 {
            let _ = writeln!(out, "... and {} more rows: use --csv to have them all", self.left_out);
        }
        std::io::stdout().lock().write_all(out.as_bytes()).context("print")
    }
}

/// Rows kept for an aligned table at most.
const ALIGNED_ROWS_MAX: usize = 10_000;

/// A progress bar on standard error, when it is a terminal.
struct Progress {
    total: usize,
    shown: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        Self { total, shown: std::io::stderr().is_terminal() }
    }

    fn show(&mut self, done: usize, rows: u64) {
        if !self.shown {
            return;
        }
        let width = 30;
        let filled = done * width / self.total.max(1);
        eprint!("\r[{}{}] {done}/{} tags, {rows} rows", "#".repeat(filled), " ".repeat(width - filled), self.total);
    }

    fn done(&self) {
        if self.shown {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value stored at a stated resolution (a whole number times it) prints as people write
    /// it, not as the product's last bits; what needs no rounding prints as it is.
    #[test]
    fn numbers_print_as_people_read_them() {
        assert_eq!(number(Some(57.0 * 0.01)), "0.57");
        assert_eq!(number(Some(12.0 * 0.1)), "1.2");
        assert_eq!(number(Some(1234.0)), "1234");
        assert_eq!(number(Some(-0.25)), "-0.25");
        assert_eq!(number(None), "");
    }

    #[test]
    fn times_parse_relative_absolute_and_epoch() {
        let now = Timestamp::from_millis(10_000_000);
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(parse_time("-1h", now).unwrap(), Timestamp::from_millis(10_000_000 - 3_600_000));
        assert_eq!(parse_time("-30s", now).unwrap(), Timestamp::from_millis(9_970_000));
        assert_eq!(parse_time("1970-01-01T00:00:01Z", now).unwrap(), Timestamp::from_millis(1000));
        assert_eq!(parse_time("1234", now).unwrap(), Timestamp::from_millis(1234));
        assert!(parse_time("last tuesday", now).is_err());
    }
}
