//! ISA-95 asset paths: `enterprise/site/area/line/cell`, then device and tag below them.

use std::fmt;

/// Why a string is not a valid asset path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssetPathError {
    #[error("the path is empty")]
    Empty,
    #[error("segment {index} is empty (two slashes in a row, or a slash at an end)")]
    EmptySegment { index: usize },
    #[error("segment {segment:?} has the character {bad:?}; use letters, digits, '-', '_' or '.'")]
    BadCharacter { segment: String, bad: char },
    #[error("the path has {count} segments; at most {max} are allowed")]
    TooDeep { count: usize, max: usize },
}

/// A place in the plant, ISA-95 style: `enterprise/site/area/line/cell/device/tag`, and also the
/// topic of that place in a Unified Namespace. Segments hold letters, digits, `-`, `_` and `.`
/// only, so a path is always a valid MQTT topic without wildcards.
/// Shared text: a tag's path is held by its config, the tag table, the historian's dictionary
/// and the edge, and 10,000 tags should not hold it four times over.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AssetPath(std::sync::Arc<str>);

impl AssetPath {
    /// The deepest path: enterprise, site, area, line, cell, device, tag.
    pub const MAX_SEGMENTS: usize = 7;

    pub fn parse(s: &str) -> Result<Self, AssetPathError> {
        if s.is_empty() {
            return Err(AssetPathError::Empty);
        }
        let count = s.split('/').count();
        if count > Self::MAX_SEGMENTS {
            return Err(AssetPathError::TooDeep { count, max: Self::MAX_SEGMENTS });
        }
        for (index, segment) in s.split('/').enumerate() {
            check_segment(segment).map_err(|e| match e {
                AssetPathError::Empty => AssetPathError::EmptySegment { index },
                other => other,
            })?;
        }
        Ok(Self(s.into()))
    }

    /// This path with one more segment below it (a device under a cell, a tag under a device).
    pub fn child(&self, segment: &str) -> Result<Self, AssetPathError> {
        Self::parse(&format!("{}/{segment}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

/// Checks one segment of an asset path (also used for device and tag names).
pub fn check_segment(segment: &str) -> Result<(), AssetPathError> {
    if segment.is_empty() {
        return Err(AssetPathError::Empty);
    }
    match segment.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        Some(bad) => Err(AssetPathError::BadCharacter { segment: segment.to_owned(), bad }),
        None => Ok(()),
    }
}

impl fmt::Display for AssetPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The one path among `paths` that is `name` or ends with `/name` (`press1/speed`), for a
/// person naming a tag briefly. `Err` holds every path that ends so (none, or more than one).
pub fn find_path<'a>(paths: impl IntoIterator<Item = &'a str> + Clone, name: &str) -> Result<&'a str, Vec<&'a str>> {
    if let Some(exact) = paths.clone().into_iter().find(|p| *p == name) {
        return Ok(exact);
    }
    let suffix = format!("/{name}");
    let matching: Vec<&str> = paths.into_iter().filter(|p| p.ends_with(&suffix)).collect();
    match matching.as_slice() {
        [one] => Ok(one),
        _ => Err(matching),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<(), AssetPathError>) {
        assert_eq!(AssetPath::parse(input).map(|_| ()), expected, "{input}");
    }

    #[test]
    fn parses_isa95_paths() {
        check("acme/dortmund/pressing/line3/cell1", Ok(()));
        check("acme/dortmund/pressing/line3/cell1/press1/speed", Ok(()));
        check("", Err(AssetPathError::Empty));
        check("acme//line3", Err(AssetPathError::EmptySegment { index: 1 }));
        check("acme/", Err(AssetPathError::EmptySegment { index: 1 }));
        check("acme/line #3", Err(AssetPathError::BadCharacter { segment: "line #3".into(), bad: ' ' }));
        check("a/b/c/d/e/f/g/h", Err(AssetPathError::TooDeep { count: 8, max: 7 }));
        check("acme/+/x", Err(AssetPathError::BadCharacter { segment: "+".into(), bad: '+' }));
    }

    #[test]
    fn child_appends_a_segment() {
        let cell = AssetPath::parse("acme/site/area/line/cell").unwrap();
        assert_eq!(cell.child("press1").unwrap().as_str(), "acme/site/area/line/cell/press1");
        assert!(cell.child("bad/name").is_ok_and(|p| p.segments().count() == 7));
        assert!(cell.child("").is_err());
    }
}
