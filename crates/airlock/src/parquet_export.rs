//! `airlock export --format parquet`: the historian's samples in a time range as one Parquet
//! file, for analysts (pyarrow, DuckDB, Spark). Columns: `time` (timestamp, milliseconds, UTC),
//! `tag` (the asset path, dictionary-encoded), `value` (f64, null when not good), `text` (for
//! text tags; the historian keeps numbers only, so it is null today), `quality` (`good`,
//! `uncertain`, `bad`) and `reason` (why not good, else null). Rows are written in row groups
//! of at most [`ROW_GROUP_ROWS`], tag by tag in time order, Snappy-compressed; memory holds one
//! row group and one read window, whatever the range.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use airlock_store::StoredSample;
use anyhow::Context as _;
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

/// Rows per row group, at most: the memory bound of the export (about 40 bytes a row).
pub const ROW_GROUP_ROWS: usize = 262_144;

const SCHEMA: &str = "message airlock_samples {
    REQUIRED INT64 time (TIMESTAMP(MILLIS,true));
    REQUIRED BYTE_ARRAY tag (UTF8);
    OPTIONAL DOUBLE value;
    OPTIONAL BYTE_ARRAY text (UTF8);
    REQUIRED BYTE_ARRAY quality (UTF8);
    OPTIONAL BYTE_ARRAY reason (UTF8);
}";

/// Rows waiting for their row group.
#[derive(Default)]
struct Rows {
    times: Vec<i64>,
    tags: Vec<ByteArray>,
    values: Vec<f64>,
    value_present: Vec<i16>,
    qualities: Vec<ByteArray>,
    reasons: Vec<ByteArray>,
    reason_present: Vec<i16>,
}

impl Rows {
    fn len(&self) -> usize {
        self.times.len()
    }
}

/// Writes rows into a Parquet file a row group at a time.
pub struct ParquetOut {
    writer: SerializedFileWriter<File>,
    rows: Rows,
    /// One `ByteArray` per quality word, shared by every row (its bytes are reference counted).
    words: [ByteArray; 3],
    pub written: u64,
}

impl ParquetOut {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let schema = Arc::new(parse_message_type(SCHEMA).context("the Parquet schema")?);
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_dictionary_enabled(true)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_created_by(format!("airlock {}", env!("CARGO_PKG_VERSION")))
            .build();
        let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
        let writer = SerializedFileWriter::new(file, schema, Arc::new(properties)).context("start the Parquet file")?;
        let words = ["good", "uncertain", "bad"].map(|w| ByteArray::from(w.as_bytes().to_vec()));
        Ok(Self { writer, rows: Rows::default(), words, written: 0 })
    }

    /// One sample of `tag` (the tag's path as a shared `ByteArray`: see [`tag_bytes`]).
    pub fn push(&mut self, tag: &ByteArray, s: &StoredSample) -> anyhow::Result<()> {
        let r = &mut self.rows;
        r.times.push(s.time.as_millis());
        r.tags.push(tag.clone());
        match s.value {
            Some(v) => {
                r.values.push(v);
                r.value_present.push(1);
            }
            None => r.value_present.push(0),
        }
        let word = match s.quality.word() {
            "good" => 0,
            "uncertain" => 1,
            _ => 2,
        };
        r.qualities.push(self.words[word].clone());
        match s.quality.reason() {
            Some(reason) => {
                r.reasons.push(ByteArray::from(reason.to_string().into_bytes()));
                r.reason_present.push(1);
            }
            None => r.reason_present.push(0),
        }
        if self.rows.len() >= ROW_GROUP_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the waiting rows as one row group.
    fn flush(&mut self) -> anyhow::Result<()> {
        if self.rows.len() == 0 {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.rows);
        let n = rows.len();
        let mut group = self.writer.next_row_group().context("start a row group")?;
        let mut column = 0;
        while let Some(mut c) = group.next_column().context("the next column")? {
            match column {
                0 => c.typed::<Int64Type>().write_batch(&rows.times, None, None),
                1 => c.typed::<ByteArrayType>().write_batch(&rows.tags, None, None),
                2 => c.typed::<DoubleType>().write_batch(&rows.values, Some(&rows.value_present), None),
                3 => c.typed::<ByteArrayType>().write_batch(&[], Some(&vec![0i16; n]), None),
                4 => c.typed::<ByteArrayType>().write_batch(&rows.qualities, None, None),
                _ => c.typed::<ByteArrayType>().write_batch(&rows.reasons, Some(&rows.reason_present), None),
            }
            .with_context(|| format!("write column {column}"))?;
            c.close().with_context(|| format!("close column {column}"))?;
            column += 1;
        }
        group.close().context("close the row group")?;
        self.written += n as u64;
        Ok(())
    }

    /// Writes what waits and the file's footer.
    pub fn finish(mut self) -> anyhow::Result<u64> {
        self.flush()?;
        self.writer.close().context("finish the Parquet file")?;
        Ok(self.written)
    }
}

/// A tag's path as the bytes every one of its rows shares.
pub fn tag_bytes(path: &str) -> ByteArray {
    ByteArray::from(path.as_bytes().to_vec())
}
