//! Config errors that say where: file, line, column and key.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based, in characters; 0 when the problem concerns the whole file.
    pub column: usize,
    /// The key at fault, e.g. `device[press1].tag[speed].type`; empty for the whole file.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn at(file: &Path, text: &str, span: Range<usize>, key: String, message: String) -> Self {
        let (line, column) = line_column(text, span.start);
        Self { file: file.to_owned(), line, column, key, message }
    }

    pub(crate) fn whole_file(file: &Path, message: String) -> Self {
        Self { file: file.to_owned(), line: 0, column: 0, key: String::new(), message }
    }

    /// A TOML error; its span is moved by `at` (the offset of the section it was found in).
    pub(crate) fn from_toml(file: &Path, text: &str, e: &toml::de::Error, at: usize) -> Self {
        let message = plain_words(e.message().trim());
        match e.span() {
            Some(span) => {
                let span = span.start + at..span.end + at;
                let key = key_on_line(text, span.start);
                Self::at(file, text, span, key, message)
            }
            None => Self::whole_file(file, message),
        }
    }
}

/// A TOML reader's message in a plant engineer's words: the Rust types it names (`expected
/// i64`, `as i128`) said as what a value must be.
fn plain_words(message: &str) -> String {
    let message = message.replace(" as i128", "").replace(" as u128", "");
    let mut parts = message.split("expected ");
    let mut out = parts.next().unwrap_or_default().to_owned();
    for part in parts {
        // The word after "expected", up to the first character that is not in a type's name.
        let end = part.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(part.len());
        let plain = match &part[..end] {
            "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
            "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number of 0 or more",
            "f32" | "f64" => "a number",
            word => word,
        };
        out.push_str("expected ");
        out.push_str(plain);
        out.push_str(&part[end..]);
    }
    out
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": key `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one config file, in file order. Never empty.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub(crate) fn one(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "{n} problem{} in the config:", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// The key of the `key = value` line holding byte `offset`, or empty when the line has none.
fn key_on_line(text: &str, offset: usize) -> String {
    let start = text.get(..offset).and_then(|b| b.rfind('\n')).map_or(0, |i| i + 1);
    let line = text.get(start..).and_then(|l| l.lines().next()).unwrap_or("");
    match line.split_once('=') {
        Some((key, _)) if !key.trim().starts_with('[') => key.trim().to_owned(),
        _ => String::new(),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 9), (2, 3));
        assert_eq!(line_column(text, 999), (3, 1));
    }
}
