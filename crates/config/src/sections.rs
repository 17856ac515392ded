//! Reading a config a device and a tag at a time, so that a file of 10,000 tags is never held
//! as one TOML tree (about 3 KB a tag) plus its raw structs (about 1.7 KB a tag) at once
//! (issue 15: 10,000 tags in 30 MB, the parse included).
//!
//! The file's table headers are found with the TOML lexer (so a `[` inside a string or an
//! array is never taken for one). Every `[[device]]`, `[[device.tag]]` and `[device.oee]`
//! section is cut out; the rest of the file (gateway, store, sinks, ...) is parsed as one
//! document with those sections blanked, so every byte keeps its place. Each device's own keys
//! and its OEE table are parsed on their own; each tag is parsed only when validation walks to
//! it, and dropped once checked. Values keep their place in the file (spans are moved by the
//! section's offset), so every error still names the right line and column.
//!
//! Anything this does not recognise (a quoted `"device"` header, `[device]` as a plain table,
//! devices written inline) returns `None`, and the whole file is read in one piece as before:
//! the same result and the same errors, only with more memory.

use std::ops::Range;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};
use toml_parser::lexer::TokenKind;

use crate::ConfigError;
use crate::raw::{RawConfig, RawDevice};

/// A section of the file: where its header starts, and its body (the keys under the header).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Section {
    pub header: usize,
    pub body: Range<usize>,
}

/// One device's sections.
#[derive(Debug, PartialEq)]
struct DeviceSections {
    device: Section,
    oee: Option<Section>,
    tags: Vec<Section>,
}

/// Where the devices stand in the file, and every byte range that belongs to them.
#[derive(Debug, Default, PartialEq)]
struct Layout {
    devices: Vec<DeviceSections>,
    /// Each device, tag and OEE section whole (header and body), to blank for the rest.
    owned: Vec<Range<usize>>,
}

/// What a table header names.
enum Header {
    Device,
    Tag,
    Oee,
    Other,
}

/// The devices' sections, or `None` when the file has no `[[device]]` header or is laid out in
/// a way this does not read (the caller then parses the whole file in one piece).
fn layout(text: &str) -> Option<Layout> {
    // Each header: what it names, where its line starts, where its body starts.
    let mut headers: Vec<(Header, usize, usize)> = Vec::new();
    let source = toml_parser::Source::new(text);
    let mut tokens = source.lex().peekable();
    // Brackets open in the value being read; `None` at the start of a statement.
    let mut depth: Option<usize> = None;
    while let Some(token) = tokens.next() {
        let kind = token.kind();
        match (depth, kind) {
            (_, TokenKind::Eof) => break,
            (None, TokenKind::Whitespace | TokenKind::Newline | TokenKind::Comment) => {}
            (None, TokenKind::LeftSquareBracket) => {
                let start = token.span().start();
                // The header as written, from its `[` to its last `]` (no comment).
                let (mut end, mut body) = (token.span().end(), text.len());
                for t in tokens.by_ref() {
                    match t.kind() {
                        TokenKind::Newline => {
                            body = t.span().end();
                            break;
                        }
                        TokenKind::Eof => break,
                        TokenKind::Whitespace | TokenKind::Comment => {}
                        _ => end = t.span().end(),
                    }
                }
                let written = text.get(start..end)?;
                // `[[` and `]]` must be written together (`[ [device] ]` is not an array of
                // tables); inside them, a dotted key may have spaces around its dots.
                let key = |inner: &str| inner.chars().filter(|c| !c.is_whitespace()).collect::<String>();
                let array = written.strip_prefix("[[").and_then(|w| w.strip_suffix("]]")).map(key);
                let table = written.strip_prefix('[').and_then(|w| w.strip_suffix(']')).map(key);
                let header = match (array.as_deref(), table.as_deref()) {
                    (Some("device"), _) => Header::Device,
                    (Some("device.tag"), _) => Header::Tag,
                    (None, Some("device.oee")) => Header::Oee,
                    _ if written.contains("device") => return None,
                    _ => Header::Other,
                };
                headers.push((header, start, body));
            }
            (None, _) => depth = Some(0),
            (Some(d), TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket) => depth = Some(d + 1),
            (Some(d), TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket) => {
                depth = Some(d.saturating_sub(1));
            }
            (Some(0), TokenKind::Newline) => depth = None,
            (Some(_), _) => {}
        }
    }
    let mut layout = Layout::default();
    for (i, (header, start, body)) in headers.iter().enumerate() {
        let end = headers.get(i + 1).map_or(text.len(), |(_, next, _)| *next);
        let section = Section { header: *start, body: *body.min(&end)..end };
        match header {
            Header::Device => layout.devices.push(DeviceSections { device: section, oee: None, tags: Vec::new() }),
            // A tag or OEE table belongs to the last device above it, as TOML has it.
            Header::Tag => layout.devices.last_mut()?.tags.push(section),
            Header::Oee => {
                let device = layout.devices.last_mut()?;
                if device.oee.replace(section).is_some() {
                    return None; // defined twice: TOML's own error says so
                }
            }
            Header::Other => continue,
        }
        layout.owned.push(*start..end);
    }
    (!layout.devices.is_empty()).then_some(layout)
}

/// The raw config read section by section: the devices carry their tags' byte ranges
/// (`tag_sections`), not the tags. `Ok(None)`: the file is laid out in a way this does not
/// read; parse it whole.
pub(crate) fn read(text: &str, file: &Path) -> Result<Option<RawConfig>, ConfigError> {
    let Some(layout) = layout(text) else { return Ok(None) };
    let mut rest = text.as_bytes().to_vec();
    for range in &layout.owned {
        for b in &mut rest[range.clone()] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    }
    // Only whole sections were blanked, each with ASCII spaces: the rest is still UTF-8.
    let rest = String::from_utf8(rest).map_err(|e| ConfigError::whole_file(file, e.to_string()))?;
    let mut raw: RawConfig = toml::from_str(&rest).map_err(|e| ConfigError::from_toml(file, text, &e, 0))?;
    // `device` written in the rest too (`device = []`, inline devices): TOML's own error, or
    // its own reading, says what it is.
    #[derive(serde::Deserialize)]
    struct Rest {
        device: Option<serde::de::IgnoredAny>,
    }
    if toml::from_str::<Rest>(&rest).map_or(true, |r| r.device.is_some()) {
        return Ok(None);
    }
    drop(rest);
    for sections in layout.devices {
        let device: Spanned<RawDevice> = section(text, file, &sections.device)?;
        let (span, mut device) = (device.span(), device.into_inner());
        if let Some(s) = &sections.oee {
            if device.oee.is_some() {
                return Ok(None);
            }
            device.oee = Some(section(text, file, s)?);
        }
        if !device.tag.is_empty() && !sections.tags.is_empty() {
            return Ok(None);
        }
        device.tag_sections = sections.tags;
        raw.device.push(Spanned::new(span, device));
    }
    Ok(Some(raw))
}

/// A section of `text` parsed as a document of its own into `T`, every value keeping its
/// place in the whole file; the table itself spans the section, header included.
pub(crate) fn section<T: DeserializeOwned>(text: &str, file: &Path, s: &Section) -> Result<Spanned<T>, ConfigError> {
    let at = s.body.start;
    let chunk =
        text.get(s.body.clone()).ok_or_else(|| ConfigError::whole_file(file, "a section out of place".into()))?;
    let table = DeTable::parse(chunk).map_err(|e| ConfigError::from_toml(file, text, &e, at))?;
    let table = Spanned::new(s.header..s.body.end, moved_table(table.into_inner(), at));
    let value =
        T::deserialize(toml::de::Deserializer::from(table)).map_err(|e| ConfigError::from_toml(file, text, &e, 0))?;
    Ok(Spanned::new(s.header..s.body.end, value))
}

fn moved<T>(v: Spanned<T>, by: usize) -> (Range<usize>, T) {
    let span = v.span();
    (span.start + by..span.end + by, v.into_inner())
}

fn moved_table(table: DeTable<'_>, by: usize) -> DeTable<'_> {
    let mut out = DeTable::new();
    for (key, value) in table {
        let (key_span, key) = moved(key, by);
        out.insert(Spanned::new(key_span, key), moved_value(value, by));
    }
    out
}

fn moved_value(value: Spanned<DeValue<'_>>, by: usize) -> Spanned<DeValue<'_>> {
    let (span, value) = moved(value, by);
    let value = match value {
        DeValue::Table(t) => DeValue::Table(moved_table(t, by)),
        DeValue::Array(a) => {
            let mut out = DeArray::new();
            for item in a {
                out.push(moved_value(item, by));
            }
            DeValue::Array(out)
        }
        other => other,
    };
    Spanned::new(span, value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The same config read whole (as before sections) and section by section.
    fn both_ways(
        text: &str,
    ) -> (Result<crate::Config, crate::ConfigErrors>, Result<crate::Config, crate::ConfigErrors>) {
        let file = Path::new("/etc/airlock/f.toml");
        let whole = toml::from_str::<RawConfig>(text)
            .map_err(|e| crate::ConfigErrors::one(ConfigError::from_toml(file, text, &e, 0)))
            .and_then(|raw| crate::validate::validate(&raw, text, file));
        (whole, crate::parse(text, file))
    }

    #[test]
    fn headers_are_found_by_the_lexer_not_by_the_look_of_a_line() {
        let text = "[gateway]\nname = \"g\" # [[device]]\nx = \"\"\"\n[[device]]\n\"\"\"\n\
                    [[device]]\nname = \"a\"\nlist = [\n  [1],\n]\n  [[ device . tag ]] # t\nname = \"t1\"\n\
                    [[sink]]\nname = \"s\"\n[[device.tag]]\nname = \"t2\"\n[device.oee]\nstate_tag = \"t1\"\n\
                    [[device]]\nname = \"b\"";
        let l = layout(text).unwrap();
        assert_eq!(l.devices.len(), 2);
        let a = &l.devices[0];
        assert_eq!(&text[a.device.header..a.device.body.start], "[[device]]\n");
        assert_eq!(&text[a.device.body.clone()], "name = \"a\"\nlist = [\n  [1],\n]\n  ");
        let tags: Vec<&str> = a.tags.iter().map(|s| &text[s.body.clone()]).collect();
        assert_eq!(tags, ["name = \"t1\"\n", "name = \"t2\"\n"]);
        assert_eq!(&text[a.tags[0].header..a.tags[0].body.start], "[[ device . tag ]] # t\n");
        assert_eq!(&text[a.oee.clone().unwrap().body], "state_tag = \"t1\"\n");
        assert_eq!(&text[l.devices[1].device.body.clone()], "name = \"b\"");
        // The sink between a device's tags stays in the rest of the file.
        assert!(l.owned.iter().all(|r| !text[r.clone()].contains("[[sink]]")));
    }

    #[test]
    fn layouts_it_does_not_read_are_left_to_the_whole_file_parse() {
        for text in [
            "[gateway]\nname = \"g\"\n",                    // no device
            "[\"device\"]\nname = \"a\"\n",                 // quoted
            "[device]\nname = \"a\"\n",                     // a plain table
            "[[device.tag]]\nname = \"t\"\n",               // a tag before any device
            "[[device]]\n[device.oee]\n[device.oee]\n",     // OEE twice
            "[[device]]\nname = \"a\"\n[[device.tag.x]]\n", // deeper than known
            "[ [device] ]\nname = \"a\"\n",                 // brackets apart
            "[[device] ]\nname = \"a\"\n",
        ] {
            assert_eq!(layout(text), None, "{text}");
        }
    }

    const DEVICE: &str = "[[device]]\nname = \"press1\"\nasset_path = \"acme/site/area/line\"\n\
                          protocol = \"modbus_tcp\"\naddress = \"127.0.0.1:502\"\n";

    #[test]
    fn a_good_config_reads_the_same_both_ways() {
        let text = format!(
            "[gateway]\nname = \"gw\"\n{DEVICE}poll_interval_ms = 100\n\
             [[device.tag]]\nname = \"speed\"\nspace = \"holding_register\"\naddress = 0\ntype = \"u16\"\n\
             [[device.tag]]\nname = \"count\"\nspace = \"holding_register\"\naddress = 1\ntype = \"u32\"\n\
             [[device.tag]]\nname = \"state\"\nspace = \"coil\"\naddress = 0\ntype = \"bool\"\n\
             [device.oee]\nstate_tag = \"state\"\nparts_tag = \"count\"\nideal_cycle_s = 2.5\n\
             [[sink]]\nname = \"file\"\ntype = \"jsonl\"\npath = \"out.jsonl\"\n\
             {}",
            DEVICE.replace("press1", "press2")
                + "[[device.tag]]\nname = \"t\"\nspace = \"input_register\"\naddress = 5\ntype = \"f32\"\n"
        );
        let (whole, sections) = both_ways(&text);
        assert_eq!(format!("{:?}", whole.unwrap()), format!("{:?}", sections.unwrap()));
    }

    #[test]
    fn a_bad_config_gets_the_same_errors_both_ways() {
        let tag = |body: &str| format!("{DEVICE}[[device.tag]]\nname = \"a\"\nspace = \"holding_register\"\n{body}");
        for text in [
            tag("address = 0\ntype = \"u17\"\n"),                // a bad value
            tag("address = 0\ntype = \"u16\"\nscale = \"x\"\n"), // a wrong type
            tag("address = 0\ntype = \"u16\"\ncolour = 1\n"),    // an unknown key
            tag("type = \"u16\"\n"),                             // no address
            tag(
                "address = 0\ntype = \"u16\"\n[[device.tag]]\nname = \"a\"\nspace = \"coil\"\naddress = 0\ntype = \"bool\"\n",
            ),
            tag("address = 0\ntype = \"u16\"\n[[device.tag]]\nspace = \"coil\"\n"), // a tag without a name
            tag(
                "address = 0\ntype = \"u32\"\n[[device.tag]]\nname = \"b\"\nspace = \"holding_register\"\naddress = 1\ntype = \"u16\"\n",
            ),
            tag(
                "address = 0\ntype = \"u16\"\n[device.oee]\nstate_tag = \"nope\"\nparts_tag = \"a\"\nideal_cycle_s = 1.0\n",
            ),
            DEVICE.replace("name = \"press1\"\n", ""), // a device without a name
            DEVICE.to_owned(),                         // a device without tags
            format!(
                "{DEVICE}unit_id = 999\n[[device.tag]]\nname = \"a\"\nspace = \"coil\"\naddress = 0\ntype = \"bool\"\n"
            ),
        ] {
            let (whole, sections) = both_ways(&text);
            let (whole, sections) = (whole.unwrap_err(), sections.unwrap_err());
            assert_eq!(whole.0, sections.0, "{text}");
        }
    }

    #[test]
    fn a_syntax_error_in_a_tag_names_its_line_in_the_file() {
        let text = format!("{DEVICE}[[device.tag]]\nname = \"a\nspace = \"coil\"\n");
        let errors = crate::parse(&text, Path::new("f.toml")).unwrap_err();
        assert_eq!(errors.0.len(), 1);
        assert_eq!(errors.0[0].line, 7, "{errors}");
    }

    #[test]
    fn a_section_keeps_every_value_in_its_place_in_the_file() {
        let text = format!("# head\n{DEVICE}unit_id = 7\ntrusted_server_certs = [\"a\", \"b\"]\n");
        let text = text.as_str();
        let s = Section { header: text.find('[').unwrap(), body: text.find("name").unwrap()..text.len() };
        let d = section::<RawDevice>(text, Path::new("f.toml"), &s).unwrap();
        assert_eq!(&text[d.span()], &text[7..]);
        let d = d.into_inner();
        assert_eq!(&text[d.name.span()], "\"press1\"");
        assert_eq!(&text[d.unit_id.as_ref().unwrap().span()], "7");
        let certs = d.trusted_server_certs.unwrap();
        assert_eq!(&text[certs.get_ref()[1].span()], "\"b\"");
    }
}
